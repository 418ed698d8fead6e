/*
 * kvstream.protocol._walk: the record walk of validate_batch, in C.
 *
 * OWNS: checking that `count` v2 records fill exactly buf[p:end] (record lengths match their
 * fields, offset deltas strictly increase and stay within max_delta, lengths are >= -1 and
 * header keys >= 0), without building any object. It is the same check as
 * records._walk_records, which stays the reference and the fallback when this module was not
 * built; tests/unit/test_records_walk.py compares the two on random and mutated input.
 * MUST NOT KNOW: anything beyond the bytes of the records section.
 *
 * Varints follow Kafka's ByteUtils.readVarint/readVarlong: zigzag, at most 5 (10) bytes, bits
 * past 32 (64) dropped. Any read at or past the end of the buffer is "record truncated".
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define MIN_RECORD_BODY 6

typedef struct {
    const unsigned char *d;
    Py_ssize_t len;
    const char *error;
    long long error_value;
} walker;

static int read_varint(walker *w, Py_ssize_t *p, int max_bytes, int64_t *out) {
    uint64_t value = 0;
    int shift = 0;
    for (int i = 0; i < max_bytes; i++) {
        if (*p >= w->len) {
            w->error = "record truncated";
            return -1;
        }
        unsigned char b = w->d[(*p)++];
        value |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) {
            if (max_bytes == 5) {
                uint32_t v = (uint32_t)value;
                *out = (int64_t)((int32_t)((v >> 1) ^ (~(v & 1) + 1)));
            } else {
                *out = (int64_t)((value >> 1) ^ (~(value & 1) + 1));
            }
            return 0;
        }
        shift += 7;
    }
    w->error = max_bytes == 5 ? "varint is too long" : "varlong is too long";
    return -1;
}

static int walk(walker *w, Py_ssize_t p, Py_ssize_t end, Py_ssize_t count, int64_t max_delta) {
    int64_t prev = -1;
    int64_t v;
    for (Py_ssize_t i = 0; i < count; i++) {
        int64_t length;
        if (read_varint(w, &p, 5, &length) < 0) return -1;
        Py_ssize_t rend = p + (Py_ssize_t)length;
        if (length < MIN_RECORD_BODY || rend > end) {
            w->error = "bad record length";
            w->error_value = length;
            return -1;
        }
        Py_ssize_t q = p + 1; /* attributes */
        if (read_varint(w, &q, 10, &v) < 0) return -1; /* timestampDelta */
        int64_t delta;
        if (read_varint(w, &q, 5, &delta) < 0) return -1;
        if (delta <= prev) {
            w->error = "offset delta does not increase";
            w->error_value = delta;
            return -1;
        }
        prev = delta;
        for (int field = 0; field < 2; field++) { /* key, then value */
            if (read_varint(w, &q, 5, &v) < 0) return -1;
            if (v > 0) {
                q += (Py_ssize_t)v;
            } else if (v < -1) {
                w->error = field == 0 ? "negative key length" : "negative value length";
                w->error_value = v;
                return -1;
            }
        }
        if (q >= w->len) {
            w->error = "record truncated";
            return -1;
        }
        if (w->d[q]) {
            int64_t headers;
            if (read_varint(w, &q, 5, &headers) < 0) return -1;
            if (headers < 0 || headers > (rend - q) / 2) {
                w->error = "bad header count";
                w->error_value = headers;
                return -1;
            }
            for (int64_t h = 0; h < headers; h++) {
                if (read_varint(w, &q, 5, &v) < 0) return -1;
                if (v < 0) {
                    w->error = "bad header key length";
                    w->error_value = v;
                    return -1;
                }
                q += (Py_ssize_t)v;
                if (read_varint(w, &q, 5, &v) < 0) return -1;
                if (v < -1) {
                    w->error = "bad header value length";
                    w->error_value = v;
                    return -1;
                }
                if (v > 0) q += (Py_ssize_t)v;
                if (q > rend) break;
            }
        } else {
            q += 1;
        }
        if (q != rend) {
            w->error = "record length does not match its fields";
            w->error_value = length;
            return -1;
        }
        p = rend;
    }
    if (p != end) {
        w->error = "bytes after the last record";
        w->error_value = end - p;
        return -1;
    }
    if (prev > max_delta) {
        w->error = "offset delta beyond the last offset delta";
        w->error_value = prev;
        return -1;
    }
    return 0;
}

static PyObject *walk_records(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t p, end, count;
    long long max_delta;
    if (!PyArg_ParseTuple(args, "y*nnnL", &view, &p, &end, &count, &max_delta)) return NULL;
    walker w = {(const unsigned char *)view.buf, view.len, NULL, 0};
    int rc;
    if (p < 0 || end > view.len || p > end) {
        w.error = "record section outside the buffer";
        rc = -1;
    } else {
        Py_BEGIN_ALLOW_THREADS
        rc = walk(&w, p, end, count, (int64_t)max_delta);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&view);
    if (rc < 0) {
        PyErr_Format(PyExc_ValueError, "%s (%lld)", w.error, w.error_value);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"walk_records", walk_records, METH_VARARGS,
     "walk_records(buf, p, end, count, max_delta): raise ValueError unless count records "
     "fill buf[p:end] exactly."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_walk", NULL, -1, methods};

PyMODINIT_FUNC PyInit__walk(void) { return PyModule_Create(&module); }
