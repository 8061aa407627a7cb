/* erl_interop._speedups: optional C accelerator for erl_interop/codec.py.

Theory of operation
-------------------
This module mirrors two internals of codec.py exactly and nothing else:

  decode_at(data, pos, depth, refs) -> (term, end)   == codec._decode, as seen through
                                                        codec.decode_term (see below)
  encode_into(term, out[, depth]) -> None            == codec._enc

codec.py calls init(globals()) once at import, which hands over the term classes, the
error classes, the constants (RECURSION_DEPTH, MAX_HASHED_KEY_DEPTH, MAP_HASH_CHECK,
MAX_ATOM_CHARS, MAX_REF_WORDS) and the Python helpers this module defers to on rare paths
(_atom_enc and its table _atom_bytes, _ENCODERS, _fallback_encoder, exact_key,
bounded_repr, and the pure-Python _decode/_enc). Nothing is imported from here, so there
is no import cycle; before init() both functions raise RuntimeError.

Decoding is a recursive descent over the bytes object's buffer (bytes are immutable, the
caller holds a reference). It checks every claimed length against the bytes that remain
before allocating, and raises DecodeError(offset, message) at the same offset the Python
decoder reports through decode_term: where the Python code would run off the end of the
input (IndexError / struct.error, which decode_term turns into DecodeError(len(data), ...))
this module raises DecodeError(len(data), ...) directly. There is no nesting limit: at
RECURSION_DEPTH levels a container is handed to dec_deep, which decodes the rest of it
with an explicit stack of frames (codec._decode_deep), so C recursion never goes beyond
RECURSION_DEPTH frames and the explicit stack is bounded by the input's size. A LIST_EXT
tail continues its list in place (never recursed into). Maps go through map_build
(codec._make_map): a dict unless a key nests tuples deeper than MAX_HASHED_KEY_DEPTH,
or (beyond MAP_HASH_CHECK keys) more pairs of keys share a Python hash than there are
keys, or a dict cannot hold the keys exactly; then a Map, with duplicates found through
exact_key bytes. Atoms are interned in a bounded direct-mapped cache keyed by
(encoding, raw bytes). Pid, Reference, Port, Export, Fun, BitBinary and ImproperList
values are built like object.__new__(cls) followed by writes through the classes' slot
member descriptors (offsets validated in init()); Map values (rare) go through
Map(pairs). Inputs this module does not take (data not bytes, negative or huge
pos/depth) are passed to the pure-Python _decode.

Encoding dispatches on the exact type like _enc. Output is gathered in a C buffer (on
the stack at first) and appended to `out` in one piece; it is flushed into `out` before
any call back into Python (a Python encoder for a subclass or an unusual field value,
_fallback_encoder), so `out` always holds exactly what the Python encoder would have
written by then. Known classes whose fields are not the plain types the fast path expects
(a float arity, an id that is an IntEnum, a list of ids, ...) are handed to the Python
encoder registered for the class in _ENCODERS, so odd values fail or succeed exactly as
in Python. Ports are always V4_PORT_EXT (OTP 26+).

Nesting while encoding: up to RECURSION_DEPTH levels, each container level recurses and
calls Py_EnterRecursiveCall (so a chain of Python callbacks, namedtuple in namedtuple,
still meets the interpreter's recursion limit: RecursionError, which callers turn into
EncodeError, as for the Python encoder); deeper, enc_deep continues with an explicit
stack (codec._enc_deep): a fun is written in place and its size patched in afterwards,
by its offset from the start of `out`. So no term of the mapping's exact types is too
deep to encode.
*/

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Tags (erl_ext_dist.xml; docs/WIRE.md §5.3). */
#define NEW_FLOAT_EXT 70
#define BIT_BINARY_EXT 77
#define COMPRESSED 80
#define ATOM_CACHE_REF 82
#define NEW_PID_EXT 88
#define NEW_PORT_EXT 89
#define NEWER_REFERENCE_EXT 90
#define SMALL_INTEGER_EXT 97
#define INTEGER_EXT 98
#define FLOAT_EXT 99
#define ATOM_EXT 100
#define REFERENCE_EXT 101
#define PORT_EXT 102
#define PID_EXT 103
#define SMALL_TUPLE_EXT 104
#define LARGE_TUPLE_EXT 105
#define NIL_EXT 106
#define STRING_EXT 107
#define LIST_EXT 108
#define BINARY_EXT 109
#define SMALL_BIG_EXT 110
#define LARGE_BIG_EXT 111
#define NEW_FUN_EXT 112
#define EXPORT_EXT 113
#define NEW_REFERENCE_EXT 114
#define SMALL_ATOM_EXT 115
#define MAP_EXT 116
#define FUN_EXT 117
#define ATOM_UTF8_EXT 118
#define SMALL_ATOM_UTF8_EXT 119
#define V4_PORT_EXT 120
#define VERSION 131

/* ------------------------------------------------------------------------------------ */
/* State set by init()                                                                  */
/* ------------------------------------------------------------------------------------ */

typedef struct {
    PyTypeObject *tp;
    int n;
    Py_ssize_t off[8];
} SlotClass;

static int initialized = 0;
static PyTypeObject *AtomType;
static SlotClass C_Pid, C_Ref, C_Port, C_Export, C_Fun, C_BitBinary, C_Improper, C_Map;
static PyObject *DecodeErrorCls, *EncodeErrorCls;
static PyObject *py_exact_key, *py_atom_enc, *py_atom_bytes, *py_encoders, *py_fallback_encoder, *py_bounded_repr;
static PyObject *py_decode, *py_enc;
static PyObject *special_names; /* {True: Atom("true"), False: Atom("false"), None: Atom("nil")} */
static Py_ssize_t recursion_depth = 64, max_hashed_key_depth = 64, map_hash_check = 32;
static Py_ssize_t max_atom_chars = 255, max_ref_words = 5;

#define SLOT(o, off) (*(PyObject **)((char *)(o) + (off)))

/* object.__new__(cls) and the slots set from v[0..n-1]; steals the references in v. */
static PyObject *
slot_new(SlotClass *c, PyObject **v)
{
    PyObject *o = c->tp->tp_alloc(c->tp, 0);
    int i;
    if (o == NULL) {
        for (i = 0; i < c->n; i++)
            Py_DECREF(v[i]);
        return NULL;
    }
    for (i = 0; i < c->n; i++)
        SLOT(o, c->off[i]) = v[i];
    return o;
}

/* ------------------------------------------------------------------------------------ */
/* Atom cache (decoding): direct-mapped, keyed by (utf8 flag, raw bytes), bounded.      */
/* ------------------------------------------------------------------------------------ */

#define ACACHE_SIZE 4096 /* power of two */

typedef struct {
    uint64_t h;
    Py_ssize_t n;
    unsigned char *raw; /* PyMem_Malloc'd copy; NULL when the entry is empty */
    PyObject *atom;
    int utf8;
} AEntry;

static AEntry acache[ACACHE_SIZE];

static inline uint64_t
fnv1a(const unsigned char *p, Py_ssize_t n, int utf8)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)utf8;
    Py_ssize_t i;
    for (i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static void
acache_clear(void)
{
    int i;
    for (i = 0; i < ACACHE_SIZE; i++) {
        if (acache[i].raw != NULL) {
            PyMem_Free(acache[i].raw);
            acache[i].raw = NULL;
            Py_CLEAR(acache[i].atom);
        }
    }
}

/* ------------------------------------------------------------------------------------ */
/* Decoding                                                                             */
/* ------------------------------------------------------------------------------------ */

typedef struct {
    const unsigned char *d;
    Py_ssize_t len;
    PyObject *refs;
} Dec;

static PyObject *
dec_err(Py_ssize_t offset, const char *fmt, ...)
{
    va_list va;
    PyObject *msg, *exc;
    va_start(va, fmt);
    msg = PyUnicode_FromFormatV(fmt, va);
    va_end(va);
    if (msg == NULL)
        return NULL;
    exc = PyObject_CallFunction(DecodeErrorCls, "nO", offset, msg);
    Py_DECREF(msg);
    if (exc == NULL)
        return NULL;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}

/* Where the Python decoder indexes past the end (IndexError / struct.error). */
static PyObject *
trunc_err(Dec *s)
{
    return dec_err(s->len, "input ends in the middle of a term");
}

static PyObject *
need_err(Py_ssize_t pos, Py_ssize_t n, Py_ssize_t len, const char *what)
{
    return dec_err(pos, "%s claims %zd bytes but only %zd remain", what, n, len - pos);
}

#define NEED(s, p, k)                                                                  \
    do {                                                                               \
        if ((s)->len - (p) < (Py_ssize_t)(k))                                          \
            return trunc_err(s);                                                       \
    } while (0)

static inline uint32_t
rd16(const unsigned char *p)
{
    return ((uint32_t)p[0] << 8) | p[1];
}

static inline uint32_t
rd32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint64_t
rd64(const unsigned char *p)
{
    return ((uint64_t)rd32(p) << 32) | rd32(p + 4);
}

static PyObject *dec(Dec *s, Py_ssize_t pos, Py_ssize_t depth, Py_ssize_t *endp);
static PyObject *dec_deep(Dec *s, Py_ssize_t pos, Py_ssize_t *endp);

/* codec._make_atom */
static PyObject *
make_atom(const unsigned char *raw, Py_ssize_t n, Py_ssize_t pos, int utf8)
{
    uint64_t h = fnv1a(raw, n, utf8);
    AEntry *e = &acache[h & (ACACHE_SIZE - 1)];
    PyObject *text, *a;
    unsigned char *copy;

    if (e->raw != NULL && e->h == h && e->n == n && e->utf8 == utf8 && memcmp(e->raw, raw, n) == 0) {
        Py_INCREF(e->atom);
        return e->atom;
    }
    if (utf8) {
        text = PyUnicode_DecodeUTF8((const char *)raw, n, NULL);
        if (text == NULL) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                PyErr_Clear();
                return dec_err(pos, "atom is not valid UTF-8");
            }
            return NULL;
        }
    }
    else {
        text = PyUnicode_DecodeLatin1((const char *)raw, n, NULL);
        if (text == NULL)
            return NULL;
    }
    if (PyUnicode_GET_LENGTH(text) > max_atom_chars) {
        Py_DECREF(text);
        return dec_err(pos, "atom longer than %zd characters", max_atom_chars);
    }
    if (n == 4 && memcmp(raw, "true", 4) == 0)
        a = Py_NewRef(Py_True);
    else if (n == 5 && memcmp(raw, "false", 5) == 0)
        a = Py_NewRef(Py_False);
    else if (n == 3 && memcmp(raw, "nil", 3) == 0)
        a = Py_NewRef(Py_None);
    else {
        a = PyObject_CallOneArg((PyObject *)AtomType, text);
        if (a == NULL) {
            Py_DECREF(text);
            return NULL;
        }
    }
    Py_DECREF(text);
    copy = PyMem_Malloc(n ? n : 1);
    if (copy != NULL) { /* no memory for the cache: just do not cache */
        PyObject *old = e->atom;
        unsigned char *oldraw = e->raw;
        memcpy(copy, raw, n);
        e->h = h;
        e->n = n;
        e->utf8 = utf8;
        e->raw = copy;
        e->atom = Py_NewRef(a);
        if (oldraw != NULL) {
            PyMem_Free(oldraw);
            Py_DECREF(old);
        }
    }
    return a;
}

/* codec._cache_ref */
static PyObject *
cache_ref(Dec *s, Py_ssize_t pos)
{
    Py_ssize_t i, n;
    NEED(s, pos, 2);
    i = s->d[pos + 1];
    if (s->refs == Py_None)
        return dec_err(pos, "ATOM_CACHE_REF %zd outside the distribution header's atom refs", i);
    if (PyList_CheckExact(s->refs)) {
        if (i >= PyList_GET_SIZE(s->refs))
            return dec_err(pos, "ATOM_CACHE_REF %zd outside the distribution header's atom refs", i);
        return Py_NewRef(PyList_GET_ITEM(s->refs, i));
    }
    n = PyObject_Size(s->refs);
    if (n < 0)
        return NULL;
    if (i >= n)
        return dec_err(pos, "ATOM_CACHE_REF %zd outside the distribution header's atom refs", i);
    {
        PyObject *key = PyLong_FromSsize_t(i), *v;
        if (key == NULL)
            return NULL;
        v = PyObject_GetItem(s->refs, key);
        Py_DECREF(key);
        return v;
    }
}

/* codec._atom_at */
static PyObject *
atom_at(Dec *s, Py_ssize_t pos, Py_ssize_t *endp)
{
    const unsigned char *d = s->d;
    Py_ssize_t n, end;
    int tag;
    PyObject *a;
    NEED(s, pos, 1);
    tag = d[pos];
    if (tag == SMALL_ATOM_UTF8_EXT || tag == SMALL_ATOM_EXT) {
        NEED(s, pos, 2);
        n = d[pos + 1];
        end = pos + 2 + n;
        if (end > s->len)
            return need_err(pos + 2, n, s->len, "atom");
        a = make_atom(d + pos + 2, n, pos, tag == SMALL_ATOM_UTF8_EXT);
    }
    else if (tag == ATOM_UTF8_EXT || tag == ATOM_EXT) {
        NEED(s, pos, 3);
        n = rd16(d + pos + 1);
        end = pos + 3 + n;
        if (end > s->len)
            return need_err(pos + 3, n, s->len, "atom");
        a = make_atom(d + pos + 3, n, pos, tag == ATOM_UTF8_EXT);
    }
    else if (tag == ATOM_CACHE_REF) {
        a = cache_ref(s, pos);
        end = pos + 2;
    }
    else
        return dec_err(pos, "expected an atom, found tag %d", tag);
    if (a != NULL)
        *endp = end;
    return a;
}

/* codec._as_atom: an Atom as it is; true/false/nil as the Atom of their name. Steals v. */
static PyObject *
as_atom(PyObject *v)
{
    PyObject *r;
    if (Py_IS_TYPE(v, AtomType))
        return v;
    r = PyObject_GetItem(special_names, v); /* KeyError/TypeError as the Python dict[...] */
    Py_DECREF(v);
    return r;
}

/* codec._node_atom */
static PyObject *
node_atom(Dec *s, Py_ssize_t pos, Py_ssize_t *endp)
{
    PyObject *a = atom_at(s, pos, endp);
    if (a == NULL)
        return NULL;
    return as_atom(a);
}

static PyObject *
dec_bignum(Dec *s, Py_ssize_t pos, int tag, Py_ssize_t *endp)
{
    const unsigned char *d = s->d;
    Py_ssize_t n, end;
    int sign;
    PyObject *v;
    if (tag == SMALL_BIG_EXT) {
        NEED(s, pos, 2);
        n = d[pos + 1];
        pos += 2;
    }
    else {
        NEED(s, pos, 5);
        n = rd32(d + pos + 1);
        pos += 5;
    }
    NEED(s, pos, 1);
    sign = d[pos];
    if (sign > 1)
        return dec_err(pos, "bignum sign byte %d", sign);
    end = pos + 1 + n;
    if (end > s->len)
        return need_err(pos + 1, n, s->len, "bignum");
    if (n <= 8) {
        uint64_t m = 0;
        Py_ssize_t i;
        for (i = n - 1; i >= 0; i--)
            m = (m << 8) | d[pos + 1 + i];
        if (!sign)
            v = PyLong_FromUnsignedLongLong(m);
        else if (m <= (uint64_t)INT64_MAX)
            v = PyLong_FromLongLong(-(long long)m);
        else {
            PyObject *u = PyLong_FromUnsignedLongLong(m);
            if (u == NULL)
                return NULL;
            v = PyNumber_Negative(u);
            Py_DECREF(u);
        }
    }
    else {
        v = _PyLong_FromByteArray(d + pos + 1, (size_t)n, 1, 0);
        if (v != NULL && sign) {
            PyObject *neg = PyNumber_Negative(v);
            Py_DECREF(v);
            v = neg;
        }
    }
    if (v != NULL)
        *endp = end;
    return v;
}

/* codec._int_at */
static PyObject *
int_at(Dec *s, Py_ssize_t pos, Py_ssize_t *endp)
{
    const unsigned char *d = s->d;
    int tag;
    NEED(s, pos, 1);
    tag = d[pos];
    if (tag == SMALL_INTEGER_EXT) {
        NEED(s, pos, 2);
        *endp = pos + 2;
        return PyLong_FromLong(d[pos + 1]);
    }
    if (tag == INTEGER_EXT) {
        NEED(s, pos, 5);
        *endp = pos + 5;
        return PyLong_FromLong((int32_t)rd32(d + pos + 1));
    }
    if (tag == SMALL_BIG_EXT || tag == LARGE_BIG_EXT)
        return dec_bignum(s, pos, tag, endp);
    return dec_err(pos, "expected an integer, found tag %d", tag);
}

static inline PyObject *
u32_obj(uint32_t v)
{
    return PyLong_FromUnsignedLong(v);
}

/* A new ImproperList(elements, tail) from values known to satisfy __post_init__
   (elements a non-empty tuple, tail not a list). Steals both. */
static PyObject *
improper_new(PyObject *elements, PyObject *tail)
{
    PyObject *v[2] = {elements, tail};
    return slot_new(&C_Improper, v);
}

/* [items | tail] where tail was not decoded from a LIST_EXT (codec._list_with_tail).
   Steals both. */
static PyObject *
list_with_tail(PyObject *items, PyObject *tail)
{
    Py_ssize_t n = PyList_GET_SIZE(items);
    PyObject *head;
    if (PyList_CheckExact(tail)) { /* STRING_EXT as a tail: the same term as a longer list */
        int r = PyList_SetSlice(items, n, n, tail);
        Py_DECREF(tail);
        if (r < 0) {
            Py_DECREF(items);
            return NULL;
        }
        return items;
    }
    if (Py_IS_TYPE(tail, C_Improper.tp)) {
        PyObject *elements, *tt;
        head = PyList_AsTuple(items);
        Py_DECREF(items);
        if (head == NULL) {
            Py_DECREF(tail);
            return NULL;
        }
        elements = PySequence_Concat(head, SLOT(tail, C_Improper.off[0]));
        Py_DECREF(head);
        tt = Py_NewRef(SLOT(tail, C_Improper.off[1]));
        Py_DECREF(tail);
        if (elements == NULL) {
            Py_DECREF(tt);
            return NULL;
        }
        return improper_new(elements, tt);
    }
    if (n == 0) {
        Py_DECREF(items);
        return tail;
    }
    head = PyList_AsTuple(items);
    Py_DECREF(items);
    if (head == NULL) {
        Py_DECREF(tail);
        return NULL;
    }
    return improper_new(head, tail);
}

/* codec._list_tail: at a LIST_EXT tag, or where a list's elements end, read the list
   headers that follow (a tail that is a LIST_EXT continues the list). Returns 0 when the
   list ended with NIL_EXT (consumed), 1 when *more elements follow, 2 when a tail term
   follows, -1 on error. *posp moves past what was read. */
static int
list_tail(Dec *s, Py_ssize_t *posp, Py_ssize_t *more)
{
    Py_ssize_t pos = *posp, n;
    for (;;) {
        if (pos >= s->len) {
            trunc_err(s);
            return -1;
        }
        if (s->d[pos] == NIL_EXT) {
            *posp = pos + 1;
            return 0;
        }
        if (s->d[pos] != LIST_EXT) {
            *posp = pos;
            return 2;
        }
        if (s->len - pos < 5) {
            trunc_err(s);
            return -1;
        }
        n = rd32(s->d + pos + 1);
        pos += 5;
        if (n > s->len - pos) {
            need_err(pos, n, s->len, "list");
            return -1;
        }
        if (n) {
            *more = n;
            *posp = pos;
            return 1;
        }
    }
}

static PyObject *
dec_list(Dec *s, Py_ssize_t pos, Py_ssize_t depth, Py_ssize_t *endp)
{
    PyObject *items = NULL, *chunk, *tail;
    Py_ssize_t n = 0, i;
    int what;
    depth++;
    for (;;) {
        what = list_tail(s, &pos, &n);
        if (what != 1)
            break;
        chunk = PyList_New(n);
        if (chunk == NULL)
            goto fail;
        for (i = 0; i < n; i++) {
            PyObject *v = dec(s, pos, depth, &pos);
            if (v == NULL) {
                Py_DECREF(chunk);
                goto fail;
            }
            PyList_SET_ITEM(chunk, i, v);
        }
        if (items == NULL)
            items = chunk;
        else { /* [a | [b | T]]: b continues the list */
            int r = PyList_SetSlice(items, PyList_GET_SIZE(items), PyList_GET_SIZE(items), chunk);
            Py_DECREF(chunk);
            if (r < 0)
                goto fail;
        }
    }
    if (what < 0)
        goto fail;
    if (items == NULL && (items = PyList_New(0)) == NULL)
        return NULL;
    if (what == 0) {
        *endp = pos;
        return items;
    }
    tail = dec(s, pos, depth, &pos);
    if (tail == NULL)
        goto fail;
    *endp = pos;
    return list_with_tail(items, tail);
fail:
    Py_XDECREF(items);
    return NULL;
}

/* --- maps: codec._make_map ----------------------------------------------------------- */

static inline int
hash_nested(PyObject *x)
{
    PyTypeObject *tp = Py_TYPE(x);
    return tp == &PyTuple_Type || tp == C_Improper.tp || tp == C_Fun.tp;
}

/* codec._too_deep_to_hash: 1 when key nests tuples (improper lists, funs) more than
   max_hashed_key_depth levels, 0 otherwise, -1 on error (no memory). Borrowed references
   only: no Python code runs during the walk. */
static int
too_deep_to_hash(PyObject *key)
{
    typedef struct {
        PyObject *o;
        Py_ssize_t d;
    } KD;
    KD sbuf[64], *st = sbuf;
    Py_ssize_t sp = 0, cap = 64;
    int r = 0;
    if (!hash_nested(key))
        return 0;
    st[sp].o = key;
    st[sp].d = 1;
    sp++;
    while (sp > 0 && r == 0) {
        KD top = st[--sp];
        PyObject *x = top.o, *seq, *extra = NULL;
        Py_ssize_t i, n;
        if (Py_IS_TYPE(x, &PyTuple_Type))
            seq = x;
        else if (Py_IS_TYPE(x, C_Improper.tp)) {
            seq = SLOT(x, C_Improper.off[0]);
            extra = SLOT(x, C_Improper.off[1]);
        }
        else
            seq = SLOT(x, C_Fun.off[7]);
        n = (seq != NULL && PyTuple_Check(seq)) ? PyTuple_GET_SIZE(seq) : 0;
        for (i = 0; i <= n && r == 0; i++) {
            PyObject *y = i < n ? PyTuple_GET_ITEM(seq, i) : extra;
            if (y == NULL || !hash_nested(y))
                continue;
            if (top.d >= max_hashed_key_depth) {
                r = 1;
                break;
            }
            if (sp == cap) {
                KD *nst;
                if (st == sbuf) {
                    nst = PyMem_Malloc(2 * cap * sizeof(KD));
                    if (nst != NULL)
                        memcpy(nst, sbuf, sizeof(sbuf));
                }
                else
                    nst = PyMem_Realloc(st, 2 * cap * sizeof(KD));
                if (nst == NULL) {
                    PyErr_NoMemory();
                    r = -1;
                    break;
                }
                st = nst;
                cap *= 2;
            }
            st[sp].o = y;
            st[sp].d = top.d + 1;
            sp++;
        }
    }
    if (st != sbuf)
        PyMem_Free(st);
    return r;
}

static int
cmp_hash(const void *a, const void *b)
{
    Py_hash_t x = *(const Py_hash_t *)a, y = *(const Py_hash_t *)b;
    return (x > y) - (x < y);
}

/* codec._hashes_spread: 1 when the pairs of keys with equal Python hashes are at most as
   many as the keys (a dict of them builds in linear time), 0 when they are more or a key
   is unhashable, -1 on another error. kv holds key, value, key, value, ... */
static int
hashes_spread(PyObject **kv, Py_ssize_t n)
{
    Py_hash_t *h = PyMem_Malloc((n ? n : 1) * sizeof(Py_hash_t));
    Py_ssize_t i, run = 1, pairs = 0;
    if (h == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < n; i++) {
        h[i] = PyObject_Hash(kv[2 * i]);
        if (h[i] == -1 && PyErr_Occurred()) {
            PyMem_Free(h);
            if (!PyErr_ExceptionMatches(PyExc_TypeError))
                return -1;
            PyErr_Clear();
            return 0;
        }
    }
    qsort(h, (size_t)n, sizeof(Py_hash_t), cmp_hash);
    for (i = 1; i < n; i++) {
        if (h[i] == h[i - 1])
            pairs += run++;
        else
            run = 1;
    }
    PyMem_Free(h);
    return pairs <= n;
}

/* codec._make_map over kv (key, value, ...; n pairs; borrowed). */
static PyObject *
map_build(PyObject **kv, Py_ssize_t n, Py_ssize_t pos)
{
    Py_ssize_t i;
    PyObject *d, *seen, *pairs, *result;
    int deep = 0, spread;
    for (i = 0; i < n && !deep; i++) {
        deep = too_deep_to_hash(kv[2 * i]);
        if (deep < 0)
            return NULL;
    }
    if (!deep) {
        spread = n <= map_hash_check ? 1 : hashes_spread(kv, n);
        if (spread < 0)
            return NULL;
        if (spread) {
            d = PyDict_New();
            if (d == NULL)
                return NULL;
            for (i = 0; i < n; i++) {
                if (PyDict_SetItem(d, kv[2 * i], kv[2 * i + 1]) < 0) {
                    if (!PyErr_ExceptionMatches(PyExc_TypeError)) { /* an unhashable key: keep pairs */
                        Py_DECREF(d);
                        return NULL;
                    }
                    PyErr_Clear();
                    Py_CLEAR(d);
                    break;
                }
            }
            if (d != NULL && PyDict_GET_SIZE(d) == n)
                return d;
            Py_XDECREF(d);
        }
    }
    /* Keys distinct in Erlang merged in Python (1, 1.0, true; 0.0, -0.0), unhashable keys,
       keys that collide or nest too deep, or a duplicate key (binary_to_term refuses those):
       exact_key bytes tell them apart. */
    seen = PySet_New(NULL);
    if (seen == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        PyObject *ek = PyObject_CallOneArg(py_exact_key, kv[2 * i]);
        if (ek == NULL || PySet_Add(seen, ek) < 0) {
            Py_XDECREF(ek);
            Py_DECREF(seen);
            return NULL;
        }
        Py_DECREF(ek);
    }
    i = PySet_GET_SIZE(seen);
    Py_DECREF(seen);
    if (i != n)
        return dec_err(pos, "map has a duplicate key");
    pairs = PyList_New(n);
    if (pairs == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        PyObject *p = PyTuple_Pack(2, kv[2 * i], kv[2 * i + 1]);
        if (p == NULL) {
            Py_DECREF(pairs);
            return NULL;
        }
        PyList_SET_ITEM(pairs, i, p);
    }
    result = PyObject_CallOneArg((PyObject *)C_Map.tp, pairs);
    Py_DECREF(pairs);
    return result;
}

static PyObject *
dec_map(Dec *s, Py_ssize_t pos, Py_ssize_t depth, Py_ssize_t *endp)
{
    Py_ssize_t n, i, got = 0;
    PyObject *stackbuf[32];
    PyObject **kv = stackbuf;
    PyObject *result = NULL;

    NEED(s, pos, 5);
    n = rd32(s->d + pos + 1);
    pos += 5;
    if (n > (s->len - pos) / 2)
        return need_err(pos, 2 * n, s->len, "map");
    depth++;
    if (2 * n > (Py_ssize_t)(sizeof(stackbuf) / sizeof(stackbuf[0]))) {
        kv = PyMem_Malloc(2 * n * sizeof(PyObject *));
        if (kv == NULL)
            return PyErr_NoMemory();
    }
    for (got = 0; got < 2 * n; got++) {
        kv[got] = dec(s, pos, depth, &pos);
        if (kv[got] == NULL)
            goto done;
    }
    result = map_build(kv, n, pos);
    if (result != NULL)
        *endp = pos;
done:
    for (i = 0; i < got; i++)
        Py_DECREF(kv[i]);
    if (kv != stackbuf)
        PyMem_Free(kv);
    return result;
}

static PyObject *
dec_ref(Dec *s, Py_ssize_t pos, int tag, Py_ssize_t *endp)
{
    const unsigned char *d = s->d;
    Py_ssize_t n, i, p;
    PyObject *node, *creation, *ids;
    PyObject *v[3];
    NEED(s, pos, 3);
    n = rd16(d + pos + 1);
    if (n == 0 || n > max_ref_words)
        return dec_err(pos, "reference with %zd words (1..%zd allowed)", n, max_ref_words);
    node = node_atom(s, pos + 3, &p);
    if (node == NULL)
        return NULL;
    if (tag == NEWER_REFERENCE_EXT) {
        if (s->len - p < 4) {
            Py_DECREF(node);
            return trunc_err(s);
        }
        creation = u32_obj(rd32(d + p));
        p += 4;
    }
    else {
        if (p >= s->len) {
            Py_DECREF(node);
            return trunc_err(s);
        }
        creation = PyLong_FromLong(d[p]);
        p += 1;
    }
    if (creation == NULL) {
        Py_DECREF(node);
        return NULL;
    }
    if (s->len - p < 4 * n) {
        Py_DECREF(node);
        Py_DECREF(creation);
        return need_err(p, 4 * n, s->len, "reference");
    }
    ids = PyTuple_New(n);
    if (ids == NULL) {
        Py_DECREF(node);
        Py_DECREF(creation);
        return NULL;
    }
    for (i = 0; i < n; i++) {
        PyObject *w = u32_obj(rd32(d + p + 4 * i));
        if (w == NULL) {
            Py_DECREF(ids);
            Py_DECREF(node);
            Py_DECREF(creation);
            return NULL;
        }
        PyTuple_SET_ITEM(ids, i, w);
    }
    *endp = p + 4 * n;
    v[0] = node;
    v[1] = creation;
    v[2] = ids;
    return slot_new(&C_Ref, v);
}

/* Build a SlotClass instance from k freshly created values; any NULL means an error was
   set: release the others and fail. */
static PyObject *
slot_new_checked(SlotClass *c, PyObject **v)
{
    int i, bad = 0;
    for (i = 0; i < c->n; i++)
        if (v[i] == NULL)
            bad = 1;
    if (bad) {
        for (i = 0; i < c->n; i++)
            Py_XDECREF(v[i]);
        return NULL;
    }
    return slot_new(c, v);
}

/* A NEW_FUN_EXT up to its free variables (codec._fun_head). The references are owned. */
typedef struct {
    Py_ssize_t start, size, nfree;
    uint32_t index;
    int arity;
    PyObject *mod, *old_index, *old_uniq, *pid;
} FunHead;

static void
fun_head_clear(FunHead *h)
{
    Py_CLEAR(h->mod);
    Py_CLEAR(h->old_index);
    Py_CLEAR(h->old_uniq);
    Py_CLEAR(h->pid);
}

/* 0 with *h filled and *endp at the first free variable, or -1 (nothing held). */
static int
fun_head(Dec *s, Py_ssize_t pos, FunHead *h, Py_ssize_t *endp)
{
    const unsigned char *d = s->d;
    Py_ssize_t p;
    h->mod = h->old_index = h->old_uniq = h->pid = NULL;
    h->start = pos;
    if (s->len - pos < 5)
        goto trunc;
    h->size = rd32(d + pos + 1);
    if (h->size > s->len - pos - 1) {
        need_err(pos + 1, h->size, s->len, "fun");
        return -1;
    }
    if (s->len - pos < 30)
        goto trunc;
    h->arity = d[pos + 5];
    h->index = rd32(d + pos + 22);
    h->nfree = rd32(d + pos + 26);
    pos += 30;
    if (h->nfree > s->len - pos) {
        need_err(pos, h->nfree, s->len, "fun free variables");
        return -1;
    }
    h->mod = atom_at(s, pos, &p);
    if (h->mod == NULL)
        goto fail;
    h->old_index = int_at(s, p, &p);
    if (h->old_index == NULL)
        goto fail;
    h->old_uniq = int_at(s, p, &p);
    if (h->old_uniq == NULL)
        goto fail;
    if (p >= s->len) {
        trunc_err(s);
        goto fail;
    }
    if (d[p] != NEW_PID_EXT && d[p] != PID_EXT) {
        dec_err(p, "fun pid must be a pid");
        goto fail;
    }
    h->pid = dec(s, p, 0, &p);
    if (h->pid == NULL)
        goto fail;
    *endp = p;
    return 0;
trunc:
    trunc_err(s);
    return -1;
fail:
    fun_head_clear(h);
    return -1;
}

/* codec._fun_done: the Fun, from its head (whose references it takes) and its free
   variables (a tuple, stolen), ending at p. */
static PyObject *
fun_done(Dec *s, FunHead *h, PyObject *free, Py_ssize_t p)
{
    PyObject *v[8];
    if (p - h->start - 1 != h->size) {
        dec_err(h->start, "fun claims %zd bytes but holds %zd", h->size, p - h->start - 1);
        fun_head_clear(h);
        Py_DECREF(free);
        return NULL;
    }
    v[3] = as_atom(h->mod);
    h->mod = NULL;
    if (v[3] == NULL) {
        fun_head_clear(h);
        Py_DECREF(free);
        return NULL;
    }
    v[0] = PyLong_FromLong(h->arity);
    v[1] = PyBytes_FromStringAndSize((const char *)s->d + h->start + 6, 16);
    v[2] = u32_obj(h->index);
    v[4] = h->old_index;
    v[5] = h->old_uniq;
    v[6] = h->pid;
    v[7] = free;
    h->old_index = h->old_uniq = h->pid = NULL;
    return slot_new_checked(&C_Fun, v);
}

static PyObject *
dec_fun(Dec *s, Py_ssize_t pos, Py_ssize_t depth, Py_ssize_t *endp)
{
    FunHead h;
    PyObject *free;
    Py_ssize_t i, p;
    if (fun_head(s, pos, &h, &p) < 0)
        return NULL;
    free = PyTuple_New(h.nfree);
    if (free == NULL) {
        fun_head_clear(&h);
        return NULL;
    }
    for (i = 0; i < h.nfree; i++) {
        PyObject *x = dec(s, p, depth + 1, &p);
        if (x == NULL) {
            fun_head_clear(&h);
            Py_DECREF(free);
            return NULL;
        }
        PyTuple_SET_ITEM(free, i, x);
    }
    *endp = p;
    return fun_done(s, &h, free, p);
}

/* FLOAT_EXT: as binary_to_term, [+-]digits.digits[(e|E)[+-]digits] then NUL or the end of
   the 31 bytes (the Python decoder's regular expression, which cannot backtrack into
   another match). Returns the length of the number, or -1. */
static int
float_ext_len(const unsigned char *r)
{
    int i = 0, j, k;
#define DIGIT(c) ((c) >= '0' && (c) <= '9')
    if (r[i] == '+' || r[i] == '-')
        i++;
    if (i >= 31 || !DIGIT(r[i]))
        return -1;
    while (i < 31 && DIGIT(r[i]))
        i++;
    if (i >= 31 || r[i] != '.')
        return -1;
    i++;
    if (i >= 31 || !DIGIT(r[i]))
        return -1;
    while (i < 31 && DIGIT(r[i]))
        i++;
    j = i;
    if (i < 31 && (r[i] == 'e' || r[i] == 'E')) {
        k = i + 1;
        if (k < 31 && (r[k] == '+' || r[k] == '-'))
            k++;
        if (k < 31 && DIGIT(r[k])) {
            while (k < 31 && DIGIT(r[k]))
                k++;
            j = k;
        }
    }
#undef DIGIT
    if (j == 31 || r[j] == 0)
        return j;
    return -1;
}

static PyObject *
dec(Dec *s, Py_ssize_t pos, Py_ssize_t depth, Py_ssize_t *endp)
{
    const unsigned char *d = s->d;
    Py_ssize_t L = s->len, n, end, p, i;
    int tag;

    assert(pos >= 0 && depth >= 0);
    if (pos >= L)
        return trunc_err(s);
    tag = d[pos];
    switch (tag) {
    case SMALL_ATOM_UTF8_EXT:
    case SMALL_ATOM_EXT:
    case ATOM_UTF8_EXT:
    case ATOM_EXT:
    case ATOM_CACHE_REF:
        return atom_at(s, pos, endp);

    case SMALL_INTEGER_EXT:
        NEED(s, pos, 2);
        *endp = pos + 2;
        return PyLong_FromLong(d[pos + 1]);

    case INTEGER_EXT:
        NEED(s, pos, 5);
        *endp = pos + 5;
        return PyLong_FromLong((int32_t)rd32(d + pos + 1));

    case SMALL_TUPLE_EXT:
    case LARGE_TUPLE_EXT: {
        PyObject *t;
        if (depth >= recursion_depth)
            return dec_deep(s, pos, endp);
        if (tag == SMALL_TUPLE_EXT) {
            NEED(s, pos, 2);
            n = d[pos + 1];
            pos += 2;
        }
        else {
            NEED(s, pos, 5);
            n = rd32(d + pos + 1);
            pos += 5;
            if (n > L - pos)
                return need_err(pos, n, L, "tuple");
        }
        t = PyTuple_New(n);
        if (t == NULL)
            return NULL;
        for (i = 0; i < n; i++) {
            PyObject *v = dec(s, pos, depth + 1, &pos);
            if (v == NULL) {
                Py_DECREF(t);
                return NULL;
            }
            PyTuple_SET_ITEM(t, i, v);
        }
        *endp = pos;
        return t;
    }

    case BINARY_EXT:
        NEED(s, pos, 5);
        n = rd32(d + pos + 1);
        end = pos + 5 + n;
        if (end > L)
            return need_err(pos + 5, n, L, "binary");
        *endp = end;
        return PyBytes_FromStringAndSize((const char *)d + pos + 5, n);

    case NIL_EXT:
        *endp = pos + 1;
        return PyList_New(0);

    case LIST_EXT:
        if (depth >= recursion_depth)
            return dec_deep(s, pos, endp);
        return dec_list(s, pos, depth, endp);

    case STRING_EXT: {
        PyObject *l;
        NEED(s, pos, 3);
        n = rd16(d + pos + 1);
        end = pos + 3 + n;
        if (end > L)
            return need_err(pos + 3, n, L, "string");
        l = PyList_New(n);
        if (l == NULL)
            return NULL;
        for (i = 0; i < n; i++) {
            PyObject *v = PyLong_FromLong(d[pos + 3 + i]);
            if (v == NULL) {
                Py_DECREF(l);
                return NULL;
            }
            PyList_SET_ITEM(l, i, v);
        }
        *endp = end;
        return l;
    }

    case MAP_EXT:
        if (depth >= recursion_depth)
            return dec_deep(s, pos, endp);
        return dec_map(s, pos, depth, endp);

    case NEW_PID_EXT:
    case PID_EXT: {
        PyObject *v[4];
        v[0] = node_atom(s, pos + 1, &p);
        if (v[0] == NULL)
            return NULL;
        if (L - p < (tag == NEW_PID_EXT ? 12 : 9)) {
            Py_DECREF(v[0]);
            return trunc_err(s);
        }
        v[1] = u32_obj(rd32(d + p));
        v[2] = u32_obj(rd32(d + p + 4));
        if (tag == NEW_PID_EXT) {
            v[3] = u32_obj(rd32(d + p + 8));
            *endp = p + 12;
        }
        else {
            v[3] = PyLong_FromLong(d[p + 8]);
            *endp = p + 9;
        }
        return slot_new_checked(&C_Pid, v);
    }

    case NEWER_REFERENCE_EXT:
    case NEW_REFERENCE_EXT:
        return dec_ref(s, pos, tag, endp);

    case REFERENCE_EXT: {
        PyObject *v[3];
        v[0] = node_atom(s, pos + 1, &p);
        if (v[0] == NULL)
            return NULL;
        if (L - p < 5) {
            Py_DECREF(v[0]);
            return trunc_err(s);
        }
        v[1] = PyLong_FromLong(d[p + 4]);
        v[2] = PyTuple_New(1);
        if (v[2] != NULL) {
            PyObject *w = u32_obj(rd32(d + p));
            if (w == NULL)
                Py_CLEAR(v[2]);
            else
                PyTuple_SET_ITEM(v[2], 0, w);
        }
        *endp = p + 5;
        return slot_new_checked(&C_Ref, v);
    }

    case NEW_FLOAT_EXT: {
        union {
            uint64_t u;
            double f;
        } x;
        NEED(s, pos, 9);
        x.u = rd64(d + pos + 1);
        if (!isfinite(x.f))
            return dec_err(pos, "float is not finite");
        *endp = pos + 9;
        return PyFloat_FromDouble(x.f);
    }

    case SMALL_BIG_EXT:
    case LARGE_BIG_EXT:
        return dec_bignum(s, pos, tag, endp);

    case BIT_BINARY_EXT: {
        int bits;
        PyObject *v[2];
        NEED(s, pos, 6);
        n = rd32(d + pos + 1);
        bits = d[pos + 5];
        end = pos + 6 + n;
        if (end > L)
            return need_err(pos + 6, n, L, "bitstring");
        /* As binary_to_term: Bits is 1..8, or 0 exactly when Len is 0. */
        if (bits > 8 || (bits == 0) != (n == 0))
            return dec_err(pos, "bitstring with %d bits in a last byte of %zd bytes", bits, n);
        *endp = end;
        if (bits == 8 || n == 0)
            return PyBytes_FromStringAndSize((const char *)d + pos + 6, n);
        v[0] = PyBytes_FromStringAndSize(NULL, n); /* a fresh object, never a cached one */
        if (v[0] == NULL)
            return NULL;
        memcpy(PyBytes_AS_STRING(v[0]), d + pos + 6, n);
        PyBytes_AS_STRING(v[0])[n - 1] = (char)(d[end - 1] & ((0xFF << (8 - bits)) & 0xFF));
        v[1] = PyLong_FromLong(bits);
        return slot_new_checked(&C_BitBinary, v);
    }

    case NEW_PORT_EXT:
    case PORT_EXT:
    case V4_PORT_EXT: {
        PyObject *v[3];
        v[0] = node_atom(s, pos + 1, &p);
        if (v[0] == NULL)
            return NULL;
        if (L - p < (tag == NEW_PORT_EXT ? 8 : tag == PORT_EXT ? 5 : 12)) {
            Py_DECREF(v[0]);
            return trunc_err(s);
        }
        if (tag == NEW_PORT_EXT) {
            v[1] = u32_obj(rd32(d + p));
            v[2] = u32_obj(rd32(d + p + 4));
            *endp = p + 8;
        }
        else if (tag == PORT_EXT) {
            v[1] = u32_obj(rd32(d + p));
            v[2] = PyLong_FromLong(d[p + 4]);
            *endp = p + 5;
        }
        else {
            v[1] = PyLong_FromUnsignedLongLong(rd64(d + p));
            v[2] = u32_obj(rd32(d + p + 8));
            *endp = p + 12;
        }
        return slot_new_checked(&C_Port, v);
    }

    case EXPORT_EXT: {
        PyObject *v[3];
        PyObject *mod, *fun;
        mod = atom_at(s, pos + 1, &p);
        if (mod == NULL)
            return NULL;
        fun = atom_at(s, p, &p);
        if (fun == NULL) {
            Py_DECREF(mod);
            return NULL;
        }
        if (p >= L || d[p] != SMALL_INTEGER_EXT) {
            Py_DECREF(mod);
            Py_DECREF(fun);
            if (p >= L)
                return trunc_err(s);
            return dec_err(p, "export arity must be a small integer");
        }
        v[0] = as_atom(mod);
        if (v[0] == NULL) {
            Py_DECREF(fun);
            return NULL;
        }
        v[1] = as_atom(fun);
        if (v[1] == NULL) {
            Py_DECREF(v[0]);
            return NULL;
        }
        if (L - p < 2) {
            Py_DECREF(v[0]);
            Py_DECREF(v[1]);
            return trunc_err(s);
        }
        v[2] = PyLong_FromLong(d[p + 1]);
        *endp = p + 2;
        return slot_new_checked(&C_Export, v);
    }

    case NEW_FUN_EXT:
        if (depth >= recursion_depth)
            return dec_deep(s, pos, endp);
        return dec_fun(s, pos, depth, endp);

    case FLOAT_EXT: {
        char buf[32];
        int k;
        double f;
        char *stop;
        if (L - (pos + 1) < 31)
            return need_err(pos + 1, 31, L, "float");
        k = float_ext_len(d + pos + 1);
        if (k < 0)
            return dec_err(pos, "FLOAT_EXT is not a finite number");
        memcpy(buf, d + pos + 1, k);
        buf[k] = 0;
        f = PyOS_string_to_double(buf, &stop, NULL);
        if (f == -1.0 && PyErr_Occurred())
            return NULL;
        if (*stop != 0 || !isfinite(f))
            return dec_err(pos, "FLOAT_EXT is not a finite number");
        *endp = pos + 32;
        return PyFloat_FromDouble(f);
    }

    case COMPRESSED:
        return dec_err(pos, "compressed term below the top level");
    case VERSION:
        return dec_err(pos, "version byte inside a term");
    case FUN_EXT:
        return dec_err(pos, "FUN_EXT (117) was removed from OTP; refused");
    default:
        return dec_err(pos, "unknown tag %d", tag);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Decoding with an explicit stack (codec._decode_deep)                                 */
/* ------------------------------------------------------------------------------------ */

enum { FR_TUPLE, FR_LIST, FR_TAIL, FR_MAP, FR_FUN };

typedef struct {
    int kind;
    Py_ssize_t got, want; /* values received, values expected */
    PyObject *obj;        /* the tuple (FR_TUPLE), the items (FR_LIST, FR_TAIL), the free variables (FR_FUN) */
    PyObject **kv;        /* FR_MAP: key, value, ... (PyMem) */
    FunHead *fun;         /* FR_FUN (PyMem) */
} Frame;

static void
frame_clear(Frame *f)
{
    Py_ssize_t i;
    Py_CLEAR(f->obj);
    if (f->kv != NULL) {
        for (i = 0; i < f->got; i++)
            Py_DECREF(f->kv[i]);
        PyMem_Free(f->kv);
        f->kv = NULL;
    }
    if (f->fun != NULL) {
        fun_head_clear(f->fun);
        PyMem_Free(f->fun);
        f->fun = NULL;
    }
}

/* Room for one more frame; returns it zeroed, or NULL (no memory). */
static Frame *
frame_push(Frame **st, Py_ssize_t *sp, Py_ssize_t *cap)
{
    Frame *f;
    if (*sp == *cap) {
        Py_ssize_t ncap = *cap ? 2 * *cap : 64;
        Frame *n = PyMem_Realloc(*st, ncap * sizeof(Frame));
        if (n == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        *st = n;
        *cap = ncap;
    }
    f = &(*st)[(*sp)++];
    memset(f, 0, sizeof(*f));
    return f;
}

/* dec() for a container at pos, without recursion: what dec() hands over once terms nest
   recursion_depth levels. The same checks in the same order as the recursive code (so the
   same term, or the same error at the same offset); scalars go to dec(), which does not
   recurse for them. */
static PyObject *
dec_deep(Dec *s, Py_ssize_t pos, Py_ssize_t *endp)
{
    const unsigned char *d = s->d;
    Py_ssize_t L = s->len, sp = 0, cap = 0, n;
    Frame *st = NULL, *f;
    PyObject *value;
    for (;;) {
        int tag;
        if (pos >= L) {
            trunc_err(s);
            goto fail;
        }
        tag = d[pos];
        if (tag == SMALL_TUPLE_EXT || tag == LARGE_TUPLE_EXT) {
            if (tag == SMALL_TUPLE_EXT) {
                if (L - pos < 2) {
                    trunc_err(s);
                    goto fail;
                }
                n = d[pos + 1];
                pos += 2;
            }
            else {
                if (L - pos < 5) {
                    trunc_err(s);
                    goto fail;
                }
                n = rd32(d + pos + 1);
                pos += 5;
                if (n > L - pos) {
                    need_err(pos, n, L, "tuple");
                    goto fail;
                }
            }
            value = PyTuple_New(n);
            if (value == NULL)
                goto fail;
            if (n) {
                if ((f = frame_push(&st, &sp, &cap)) == NULL) {
                    Py_DECREF(value);
                    goto fail;
                }
                f->kind = FR_TUPLE;
                f->obj = value;
                f->want = n;
                continue;
            }
        }
        else if (tag == LIST_EXT) {
            Py_ssize_t more = 0;
            int what = list_tail(s, &pos, &more);
            if (what < 0)
                goto fail;
            value = PyList_New(0);
            if (value == NULL)
                goto fail;
            if (what) {
                if ((f = frame_push(&st, &sp, &cap)) == NULL) {
                    Py_DECREF(value);
                    goto fail;
                }
                f->kind = what == 2 ? FR_TAIL : FR_LIST;
                f->obj = value;
                f->want = more;
                continue;
            }
        }
        else if (tag == MAP_EXT) {
            if (L - pos < 5) {
                trunc_err(s);
                goto fail;
            }
            n = rd32(d + pos + 1);
            pos += 5;
            if (n > (L - pos) / 2) {
                need_err(pos, 2 * n, L, "map");
                goto fail;
            }
            if (n) {
                PyObject **kv = PyMem_Malloc(2 * n * sizeof(PyObject *));
                if (kv == NULL) {
                    PyErr_NoMemory();
                    goto fail;
                }
                if ((f = frame_push(&st, &sp, &cap)) == NULL) {
                    PyMem_Free(kv);
                    goto fail;
                }
                f->kind = FR_MAP;
                f->kv = kv;
                f->want = 2 * n;
                continue;
            }
            value = map_build(NULL, 0, pos);
        }
        else if (tag == NEW_FUN_EXT) {
            FunHead h;
            if (fun_head(s, pos, &h, &pos) < 0)
                goto fail;
            value = PyTuple_New(h.nfree);
            if (value == NULL) {
                fun_head_clear(&h);
                goto fail;
            }
            if (h.nfree) {
                FunHead *hp = PyMem_Malloc(sizeof(FunHead));
                if (hp == NULL || (f = frame_push(&st, &sp, &cap)) == NULL) {
                    if (hp == NULL)
                        PyErr_NoMemory();
                    PyMem_Free(hp);
                    fun_head_clear(&h);
                    Py_DECREF(value);
                    goto fail;
                }
                *hp = h;
                f->kind = FR_FUN;
                f->obj = value;
                f->fun = hp;
                f->want = h.nfree;
                continue;
            }
            value = fun_done(s, &h, value, pos);
        }
        else
            value = dec(s, pos, 0, &pos); /* not a container */
        if (value == NULL)
            goto fail;
        /* Hand the value up, completing the frames it completes. */
        while (sp > 0) {
            f = &st[sp - 1];
            if (f->kind == FR_TAIL) {
                value = list_with_tail(f->obj, value);
                f->obj = NULL;
                sp--;
                if (value == NULL)
                    goto fail;
                continue;
            }
            if (f->kind == FR_LIST) {
                int r = PyList_Append(f->obj, value);
                Py_DECREF(value);
                if (r < 0)
                    goto fail;
            }
            else if (f->kind == FR_MAP)
                f->kv[f->got] = value;
            else
                PyTuple_SET_ITEM(f->obj, f->got, value); /* FR_TUPLE, FR_FUN */
            value = NULL;
            if (++f->got < f->want)
                break;
            if (f->kind == FR_LIST) {
                Py_ssize_t more = 0;
                int what = list_tail(s, &pos, &more);
                if (what < 0)
                    goto fail;
                if (what == 1) {
                    f->want += more;
                    break;
                }
                if (what == 2) {
                    f->kind = FR_TAIL;
                    break;
                }
                value = f->obj;
                f->obj = NULL;
            }
            else if (f->kind == FR_TUPLE) {
                value = f->obj;
                f->obj = NULL;
            }
            else if (f->kind == FR_MAP)
                value = map_build(f->kv, f->want / 2, pos);
            else {
                value = fun_done(s, f->fun, f->obj, pos);
                f->obj = NULL;
            }
            frame_clear(f);
            sp--;
            if (value == NULL)
                goto fail;
        }
        if (sp == 0) {
            PyMem_Free(st);
            *endp = pos;
            return value;
        }
    }
fail:
    while (sp > 0)
        frame_clear(&st[--sp]);
    PyMem_Free(st);
    return NULL;
}

static PyObject *
not_initialized(void)
{
    PyErr_SetString(PyExc_RuntimeError, "erl_interop._speedups.init() has not been called");
    return NULL;
}

PyDoc_STRVAR(decode_at_doc,
"decode_at(data, pos, depth, refs) -> (term, end)\n\n"
"codec._decode in C: decode one term of ``data`` (bytes) at ``pos``.");

static PyObject *
decode_at(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Dec s;
    Py_ssize_t pos, depth, end = 0;
    PyObject *v, *r;
    if (!initialized)
        return not_initialized();
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "decode_at() takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!PyBytes_Check(args[0]) || !PyLong_CheckExact(args[1]) || !PyLong_CheckExact(args[2]))
        return PyObject_Vectorcall(py_decode, args, nargs, NULL);
    pos = PyLong_AsSsize_t(args[1]);
    depth = PyLong_AsSsize_t(args[2]);
    if (pos < 0 || depth < 0) {
        /* negative, or too large for a Py_ssize_t: the Python decoder's semantics */
        PyErr_Clear();
        return PyObject_Vectorcall(py_decode, args, nargs, NULL);
    }
    s.d = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    s.len = PyBytes_GET_SIZE(args[0]);
    s.refs = args[3];
    v = dec(&s, pos, depth, &end);
    if (v == NULL) {
        assert(PyErr_Occurred());
        return NULL;
    }
    assert(!PyErr_Occurred() && end > pos && end <= s.len);
    r = PyTuple_New(2);
    if (r == NULL) {
        Py_DECREF(v);
        return NULL;
    }
    PyTuple_SET_ITEM(r, 0, v);
    {
        PyObject *e = PyLong_FromSsize_t(end);
        if (e == NULL) {
            Py_DECREF(r);
            return NULL;
        }
        PyTuple_SET_ITEM(r, 1, e);
    }
    return r;
}

/* ------------------------------------------------------------------------------------ */
/* Encoding                                                                             */
/* ------------------------------------------------------------------------------------ */

#define W_STACK 1024
#define W_DIRECT 512 /* blobs at least this large are appended to `out` directly */

typedef struct {
    PyObject *out; /* a bytearray */
    char *buf;
    Py_ssize_t len, cap;
    int heap;
    char stack[W_STACK];
} W;

static void
w_init(W *w, PyObject *out)
{
    w->out = out;
    w->buf = w->stack;
    w->len = 0;
    w->cap = W_STACK;
    w->heap = 0;
}

static void
w_free(W *w)
{
    if (w->heap)
        PyMem_Free(w->buf);
}

/* Append the buffered bytes to `out`. */
static int
w_flush(W *w)
{
    Py_ssize_t n0;
    if (w->len == 0)
        return 0;
    n0 = PyByteArray_GET_SIZE(w->out);
    if (PyByteArray_Resize(w->out, n0 + w->len) < 0)
        return -1;
    memcpy(PyByteArray_AS_STRING(w->out) + n0, w->buf, w->len);
    w->len = 0;
    return 0;
}

static int
w_grow(W *w, Py_ssize_t k)
{
    Py_ssize_t cap = w->cap;
    char *nb;
    while (cap - w->len < k) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    if (w->heap) {
        nb = PyMem_Realloc(w->buf, cap);
        if (nb == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    else {
        nb = PyMem_Malloc(cap);
        if (nb == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(nb, w->buf, w->len);
        w->heap = 1;
    }
    w->buf = nb;
    w->cap = cap;
    return 0;
}

/* Room for k more bytes; returns where to write them (and counts them as written). */
static inline char *
w_take(W *w, Py_ssize_t k)
{
    char *p;
    if (w->cap - w->len < k && w_grow(w, k) < 0)
        return NULL;
    p = w->buf + w->len;
    w->len += k;
    assert(w->len <= w->cap);
    return p;
}

static inline int
w_byte(W *w, int b)
{
    char *p = w_take(w, 1);
    if (p == NULL)
        return -1;
    *p = (char)b;
    return 0;
}

static int
w_bytes(W *w, const char *src, Py_ssize_t k)
{
    char *p;
    if (k >= W_DIRECT) {
        Py_ssize_t n0;
        if (w_flush(w) < 0)
            return -1;
        n0 = PyByteArray_GET_SIZE(w->out);
        if (PyByteArray_Resize(w->out, n0 + k) < 0)
            return -1;
        memcpy(PyByteArray_AS_STRING(w->out) + n0, src, k);
        return 0;
    }
    p = w_take(w, k);
    if (p == NULL)
        return -1;
    memcpy(p, src, k);
    return 0;
}

static inline void
put32(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

static inline void
put64(char *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

static PyObject *
enc_err(const char *fmt, ...)
{
    va_list va;
    PyObject *msg;
    va_start(va, fmt);
    msg = PyUnicode_FromFormatV(fmt, va);
    va_end(va);
    if (msg != NULL) {
        PyErr_SetObject(EncodeErrorCls, msg);
        Py_DECREF(msg);
    }
    return NULL;
}

static int enc(W *w, PyObject *t, int depth);
static int enc_deep(W *w, PyObject *t);

/* Call a Python encoder fn(t, out) after flushing what we hold. */
static int
enc_call(W *w, PyObject *fn, PyObject *t)
{
    PyObject *args[2], *r;
    if (w_flush(w) < 0)
        return -1;
    args[0] = t;
    args[1] = w->out;
    r = PyObject_Vectorcall(fn, args, 2, NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* What _enc does for a type it has no inline branch for: _ENCODERS, else the fallback. */
static int
enc_delegate(W *w, PyObject *t)
{
    PyObject *fn = PyDict_GetItemWithError(py_encoders, (PyObject *)Py_TYPE(t));
    int r;
    if (fn != NULL) {
        Py_INCREF(fn);
    }
    else {
        if (PyErr_Occurred())
            return -1;
        fn = PyObject_CallOneArg(py_fallback_encoder, t);
        if (fn == NULL)
            return -1;
    }
    r = enc_call(w, fn, t);
    Py_DECREF(fn);
    return r;
}

static int
w_pybytes(W *w, PyObject *b)
{
    if (!PyBytes_Check(b)) {
        PyErr_SetString(PyExc_TypeError, "_atom_enc did not return bytes");
        return -1;
    }
    return w_bytes(w, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b));
}

/* out += _atom_bytes.get(a) or _atom_enc(a) */
static int
enc_atom(W *w, PyObject *a)
{
    PyObject *b;
    int r;
    if (Py_IS_TYPE(a, AtomType) || PyUnicode_CheckExact(a)) {
        b = PyDict_GetItemWithError(py_atom_bytes, a);
        if (b != NULL && PyBytes_CheckExact(b))
            return w_bytes(w, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b));
        if (b == NULL && PyErr_Occurred())
            return -1;
    }
    b = PyObject_CallOneArg(py_atom_enc, a);
    if (b == NULL)
        return -1;
    r = w_pybytes(w, b);
    Py_DECREF(b);
    return r;
}

/* An exact int as a 32-bit / 64-bit unsigned field: 0 ok, 1 out of range. */
static int
u32_of(PyObject *o, uint32_t *out)
{
    int of;
    long long v = PyLong_AsLongLongAndOverflow(o, &of);
    if (of || v < 0 || v > 0xFFFFFFFFLL)
        return 1;
    *out = (uint32_t)v;
    return 0;
}

static int
u64_of(PyObject *o, uint64_t *out)
{
    unsigned long long v;
    if (_PyLong_Sign(o) < 0)
        return 1;
    v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 1;
    }
    *out = v;
    return 0;
}

static int
enc_int(W *w, PyObject *t)
{
    int of;
    long long v = PyLong_AsLongLongAndOverflow(t, &of);
    char *p;
    if (!of) {
        if (v >= 0 && v < 256) {
            p = w_take(w, 2);
            if (p == NULL)
                return -1;
            p[0] = SMALL_INTEGER_EXT;
            p[1] = (char)v;
            return 0;
        }
        if (v >= -2147483648LL && v <= 2147483647LL) {
            p = w_take(w, 5);
            if (p == NULL)
                return -1;
            p[0] = INTEGER_EXT;
            put32(p + 1, (uint32_t)(int32_t)v);
            return 0;
        }
        {
            unsigned long long mag = v < 0 ? (unsigned long long)0 - (unsigned long long)v : (unsigned long long)v;
            int n = 0, i;
            unsigned long long m = mag;
            while (m) {
                n++;
                m >>= 8;
            }
            p = w_take(w, 3 + n);
            if (p == NULL)
                return -1;
            p[0] = SMALL_BIG_EXT;
            p[1] = (char)n;
            p[2] = v < 0 ? 1 : 0;
            for (i = 0; i < n; i++) {
                p[3 + i] = (char)(mag & 0xFF);
                mag >>= 8;
            }
            return 0;
        }
    }
    if (v == -1 && PyErr_Occurred())
        return -1;
    {
        int neg = _PyLong_Sign(t) < 0;
        PyObject *mag = neg ? PyNumber_Negative(t) : Py_NewRef(t);
        size_t nbits;
        Py_ssize_t n;
        int r;
        if (mag == NULL)
            return -1;
        nbits = _PyLong_NumBits(mag);
        if (nbits == (size_t)-1 && PyErr_Occurred()) {
            Py_DECREF(mag);
            return -1;
        }
        n = (Py_ssize_t)((nbits + 7) / 8);
        if (n > 0xFFFFFFFFLL) {
            Py_DECREF(mag);
            enc_err("integer too large to encode");
            return -1;
        }
        if (n < 256) {
            p = w_take(w, 3 + n);
            if (p == NULL) {
                Py_DECREF(mag);
                return -1;
            }
            p[0] = SMALL_BIG_EXT;
            p[1] = (char)n;
            p[2] = neg;
            p += 3;
        }
        else {
            p = w_take(w, 6 + n);
            if (p == NULL) {
                Py_DECREF(mag);
                return -1;
            }
            p[0] = LARGE_BIG_EXT;
            put32(p + 1, (uint32_t)n);
            p[5] = neg;
            p += 6;
        }
#if PY_VERSION_HEX >= 0x030D0000
        r = _PyLong_AsByteArray((PyLongObject *)mag, (unsigned char *)p, (size_t)n, 1, 0, 1);
#else
        r = _PyLong_AsByteArray((PyLongObject *)mag, (unsigned char *)p, (size_t)n, 1, 0);
#endif
        Py_DECREF(mag);
        return r;
    }
}

static int
enc_binary(W *w, const char *data, Py_ssize_t n)
{
    char *p;
    if (n > 0xFFFFFFFFLL) {
        enc_err("binary of %zd bytes is too large to encode", n);
        return -1;
    }
    p = w_take(w, 5);
    if (p == NULL)
        return -1;
    p[0] = BINARY_EXT;
    put32(p + 1, (uint32_t)n);
    return w_bytes(w, data, n);
}

static int
enc_str(W *w, PyObject *t)
{
    PyObject *b;
    int r;
    if (PyUnicode_IS_COMPACT_ASCII(t))
        return enc_binary(w, (const char *)PyUnicode_DATA(t), PyUnicode_GET_LENGTH(t));
    b = PyUnicode_AsUTF8String(t); /* UnicodeEncodeError on lone surrogates, as .encode() */
    if (b == NULL)
        return -1;
    r = enc_binary(w, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b));
    Py_DECREF(b);
    return r;
}

/* A tag byte and a 32-bit count (LIST_EXT, MAP_EXT, LARGE_TUPLE_EXT). */
static int
w_head32(W *w, int tag, Py_ssize_t n)
{
    char *p = w_take(w, 5);
    if (p == NULL)
        return -1;
    p[0] = (char)tag;
    put32(p + 1, (uint32_t)n);
    return 0;
}

/* SMALL_TUPLE_EXT or LARGE_TUPLE_EXT with the arity n; the elements are the caller's. */
static int
w_tuple_head(W *w, Py_ssize_t n)
{
    char *p;
    if (n >= 256)
        return w_head32(w, LARGE_TUPLE_EXT, n);
    p = w_take(w, 2);
    if (p == NULL)
        return -1;
    p[0] = SMALL_TUPLE_EXT;
    p[1] = (char)n;
    return 0;
}

/* MAP_EXT with the size n (refused past 32 bits); the pairs are the caller's. */
static int
w_dict_head(W *w, Py_ssize_t n)
{
    if (n > 0xFFFFFFFFLL) {
        enc_err("map too large to encode");
        return -1;
    }
    return w_head32(w, MAP_EXT, n);
}

/* The start of a list t of n elements: 1 when that wrote it whole (NIL_EXT, or STRING_EXT
   when every element is an exact int 0..255, bools not), 0 after a LIST_EXT header (the
   elements and the NIL tail are the caller's), -1 on error. */
static int
w_list_head(W *w, PyObject *t, Py_ssize_t n)
{
    Py_ssize_t i;
    char *p;
    if (n == 0)
        return w_byte(w, NIL_EXT) < 0 ? -1 : 1;
    if (n < 65536) {
        Py_ssize_t at = w->len;
        p = w_take(w, 3 + n);
        if (p == NULL)
            return -1;
        for (i = 0; i < n; i++) {
            PyObject *x = PyList_GET_ITEM(t, i);
            long v;
            int of;
            if (!PyLong_CheckExact(x))
                break;
            v = PyLong_AsLongAndOverflow(x, &of);
            if (of || v < 0 || v > 255)
                break;
            p[3 + i] = (char)v;
        }
        if (i == n) {
            p[0] = STRING_EXT;
            p[1] = (char)(n >> 8);
            p[2] = (char)n;
            return 1;
        }
        w->len = at;
    }
    if (n > 0xFFFFFFFFLL) {
        enc_err("list too long to encode");
        return -1;
    }
    return w_head32(w, LIST_EXT, n);
}

static int
enc_list(W *w, PyObject *t, int depth)
{
    Py_ssize_t i;
    int h = w_list_head(w, t, PyList_GET_SIZE(t));
    if (h != 0)
        return h < 0 ? -1 : 0;
    /* `for x in t`: the length is re-read at every step, as a list iterator does */
    for (i = 0; i < PyList_GET_SIZE(t); i++) {
        PyObject *x = PyList_GET_ITEM(t, i);
        int r;
        Py_INCREF(x);
        r = enc(w, x, depth);
        Py_DECREF(x);
        if (r < 0)
            return -1;
    }
    return w_byte(w, NIL_EXT);
}

static int
enc_dict(W *w, PyObject *t, int depth)
{
    Py_ssize_t n = PyDict_GET_SIZE(t), it = 0;
    PyObject *k, *v;
    if (w_dict_head(w, n) < 0)
        return -1;
    while (PyDict_Next(t, &it, &k, &v)) {
        int r;
        Py_INCREF(k);
        Py_INCREF(v);
        r = enc(w, k, depth);
        if (r == 0)
            r = enc(w, v, depth);
        Py_DECREF(k);
        Py_DECREF(v);
        if (r < 0)
            return -1;
        if (PyDict_GET_SIZE(t) != n) {
            PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
            return -1;
        }
    }
    return 0;
}

/* Pid; returns 1 when the fields are not plain (the caller delegates to Python). */
static int
enc_pid(W *w, PyObject *t)
{
    PyObject *node = SLOT(t, C_Pid.off[0]), *id = SLOT(t, C_Pid.off[1]);
    PyObject *serial = SLOT(t, C_Pid.off[2]), *creation = SLOT(t, C_Pid.off[3]);
    uint32_t a, b, c;
    char *p;
    if (node == NULL || id == NULL || serial == NULL || creation == NULL || !PyLong_CheckExact(id) ||
        !PyLong_CheckExact(serial) || !PyLong_CheckExact(creation))
        return 1;
    if (w_byte(w, NEW_PID_EXT) < 0 || enc_atom(w, node) < 0)
        return -1;
    if (u32_of(id, &a) || u32_of(serial, &b) || u32_of(creation, &c)) {
        PyObject *r = PyObject_CallFunction(py_bounded_repr, "Oi", t, 200); /* never repr(): 5000 digits raise */
        if (r != NULL) {
            enc_err("pid fields out of range: %U", r);
            Py_DECREF(r);
        }
        return -1;
    }
    p = w_take(w, 12);
    if (p == NULL)
        return -1;
    put32(p, a);
    put32(p + 4, b);
    put32(p + 8, c);
    return 0;
}

static int
enc_ref(W *w, PyObject *t)
{
    PyObject *node = SLOT(t, C_Ref.off[0]), *creation = SLOT(t, C_Ref.off[1]), *ids = SLOT(t, C_Ref.off[2]);
    Py_ssize_t n, i;
    uint32_t c, x[8];
    char *p;
    if (node == NULL || creation == NULL || ids == NULL || !PyTuple_CheckExact(ids) ||
        !PyLong_CheckExact(creation))
        return 1;
    n = PyTuple_GET_SIZE(ids);
    for (i = 0; i < n && i < 8; i++)
        if (!PyLong_CheckExact(PyTuple_GET_ITEM(ids, i)))
            return 1;
    if (n < 1 || n > max_ref_words || n > 8) {
        enc_err("reference with %zd words", n);
        return -1;
    }
    p = w_take(w, 3);
    if (p == NULL)
        return -1;
    p[0] = NEWER_REFERENCE_EXT;
    p[1] = (char)(n >> 8);
    p[2] = (char)n;
    if (enc_atom(w, node) < 0)
        return -1;
    if (u32_of(creation, &c))
        goto range;
    for (i = 0; i < n; i++)
        if (u32_of(PyTuple_GET_ITEM(ids, i), &x[i]))
            goto range;
    p = w_take(w, 4 + 4 * n);
    if (p == NULL)
        return -1;
    put32(p, c);
    for (i = 0; i < n; i++)
        put32(p + 4 + 4 * i, x[i]);
    return 0;
range:
    enc_err("reference fields out of range");
    return -1;
}

static int
enc_port(W *w, PyObject *t)
{
    PyObject *node = SLOT(t, C_Port.off[0]), *id = SLOT(t, C_Port.off[1]), *creation = SLOT(t, C_Port.off[2]);
    uint64_t i64;
    uint32_t c;
    char *p;
    if (node == NULL || id == NULL || creation == NULL || !PyLong_CheckExact(id) || !PyLong_CheckExact(creation))
        return 1;
    /* V4_PORT_EXT whatever the id: what OTP 26 and later always write */
    if (w_byte(w, V4_PORT_EXT) < 0 || enc_atom(w, node) < 0)
        return -1;
    if (u64_of(id, &i64) || u32_of(creation, &c)) {
        enc_err("port fields out of range");
        return -1;
    }
    p = w_take(w, 12);
    if (p == NULL)
        return -1;
    put64(p, i64);
    put32(p + 8, c);
    return 0;
}

static int
enc_export(W *w, PyObject *t)
{
    PyObject *mod = SLOT(t, C_Export.off[0]), *fun = SLOT(t, C_Export.off[1]), *arity = SLOT(t, C_Export.off[2]);
    long a;
    int of;
    char *p;
    if (mod == NULL || fun == NULL || arity == NULL || !PyLong_CheckExact(arity))
        return 1;
    a = PyLong_AsLongAndOverflow(arity, &of);
    if (of || a < 0 || a > 255) {
        enc_err("export arity out of range");
        return -1;
    }
    if (w_byte(w, EXPORT_EXT) < 0 || enc_atom(w, mod) < 0 || enc_atom(w, fun) < 0)
        return -1;
    p = w_take(w, 2);
    if (p == NULL)
        return -1;
    p[0] = SMALL_INTEGER_EXT;
    p[1] = (char)a;
    return 0;
}

static int
enc_bitbinary(W *w, PyObject *t)
{
    PyObject *data = SLOT(t, C_BitBinary.off[0]), *bits = SLOT(t, C_BitBinary.off[1]);
    long b;
    int of;
    Py_ssize_t n;
    char *p;
    const char *src;
    if (data == NULL || bits == NULL || !PyBytes_CheckExact(data) || !PyLong_CheckExact(bits))
        return 1;
    b = PyLong_AsLongAndOverflow(bits, &of);
    n = PyBytes_GET_SIZE(data);
    src = PyBytes_AS_STRING(data);
    if (of || b < 1 || b > 8 || n < 1)
        return 1; /* what Python does with these (errors or not) is its own business */
    if (b == 8)
        return enc_binary(w, src, n);
    if (n > 0xFFFFFFFFLL) {
        enc_err("bitstring too large to encode");
        return -1;
    }
    p = w_take(w, 6);
    if (p == NULL)
        return -1;
    p[0] = BIT_BINARY_EXT;
    put32(p + 1, (uint32_t)n);
    p[5] = (char)b;
    if (w_bytes(w, src, n - 1) < 0)
        return -1;
    return w_byte(w, (unsigned char)src[n - 1] & ((0xFF << (8 - b)) & 0xFF));
}

static int
enc_improper(W *w, PyObject *t, int depth)
{
    PyObject *elements = SLOT(t, C_Improper.off[0]), *tail = SLOT(t, C_Improper.off[1]);
    Py_ssize_t n, i;
    int r;
    if (elements == NULL || tail == NULL || !PyTuple_CheckExact(elements))
        return 1;
    Py_INCREF(elements);
    Py_INCREF(tail);
    n = PyTuple_GET_SIZE(elements);
    r = -1;
    if (w_head32(w, LIST_EXT, n) < 0)
        goto done;
    for (i = 0; i < n; i++)
        if (enc(w, PyTuple_GET_ITEM(elements, i), depth) < 0)
            goto done;
    r = enc(w, tail, depth);
done:
    Py_DECREF(elements);
    Py_DECREF(tail);
    return r;
}

static int
enc_map(W *w, PyObject *t, int depth)
{
    PyObject *items = SLOT(t, C_Map.off[0]);
    Py_ssize_t n, i;
    int r = -1;
    if (items == NULL || !PyTuple_CheckExact(items))
        return 1;
    n = PyTuple_GET_SIZE(items);
    for (i = 0; i < n; i++) {
        PyObject *kv = PyTuple_GET_ITEM(items, i);
        if (!PyTuple_CheckExact(kv) || PyTuple_GET_SIZE(kv) != 2)
            return 1;
    }
    Py_INCREF(items);
    if (w_head32(w, MAP_EXT, n) < 0)
        goto done;
    for (i = 0; i < n; i++) {
        PyObject *kv = PyTuple_GET_ITEM(items, i);
        if (enc(w, PyTuple_GET_ITEM(kv, 0), depth) < 0 || enc(w, PyTuple_GET_ITEM(kv, 1), depth) < 0)
            goto done;
    }
    r = 0;
done:
    Py_DECREF(items);
    return r;
}

/* The checks of codec._fun_prefix on a Fun's fields f[0..7] (borrowed): 1 when the fields
   are not plain (the caller delegates to Python), -1 on error, 0 with *arity, *index set. */
static int
fun_check(PyObject *t, PyObject **f, long *arity, uint32_t *index)
{
    int i, of;
    for (i = 0; i < 8; i++) {
        f[i] = SLOT(t, C_Fun.off[i]);
        if (f[i] == NULL)
            return 1;
    }
    /* arity, uniq, index, module, old_index, old_uniq, pid, free_vars */
    if (!PyLong_CheckExact(f[0]) || !PyBytes_CheckExact(f[1]) || !PyLong_CheckExact(f[2]) ||
        !PyLong_CheckExact(f[4]) || !PyLong_CheckExact(f[5]) || !Py_IS_TYPE(f[6], C_Pid.tp) ||
        !PyTuple_CheckExact(f[7]))
        return 1;
    if (PyBytes_GET_SIZE(f[1]) != 16) {
        enc_err("fun uniq must be 16 bytes");
        return -1;
    }
    *arity = PyLong_AsLongAndOverflow(f[0], &of);
    if (of || *arity < 0 || *arity > 255 || u32_of(f[2], index)) {
        enc_err("fun fields out of range");
        return -1;
    }
    return 0;
}

/* codec._fun_prefix: the body up to the free variables, into bw. */
static int
fun_prefix(W *bw, PyObject **f, long arity, uint32_t index)
{
    char *p = w_take(bw, 25);
    int k;
    if (p == NULL)
        return -1;
    p[0] = (char)arity;
    memcpy(p + 1, PyBytes_AS_STRING(f[1]), 16);
    put32(p + 17, index);
    put32(p + 21, (uint32_t)PyTuple_GET_SIZE(f[7]));
    if (enc_atom(bw, f[3]) < 0 || enc_int(bw, f[4]) < 0 || enc_int(bw, f[5]) < 0)
        return -1;
    k = enc_pid(bw, f[6]);
    if (k < 0)
        return -1;
    if (k > 0 && enc_delegate(bw, f[6]) < 0) /* Python's _enc_pid(t.pid, body) */
        return -1;
    return 0;
}

static int
enc_fun(W *w, PyObject *t, int depth)
{
    PyObject *f[8];
    Py_ssize_t i, nfree, blen;
    W *bw = NULL;
    PyObject *body = NULL;
    uint32_t index;
    long arity;
    int r = -1;
    char *p;
    r = fun_check(t, f, &arity, &index);
    if (r != 0)
        return r;
    r = -1;
    nfree = PyTuple_GET_SIZE(f[7]);
    for (i = 0; i < 8; i++)
        Py_INCREF(f[i]);
    /* The body goes to its own bytearray (Python encoders called back for free variables
       append to it), then its size is known. */
    body = PyByteArray_FromStringAndSize(NULL, 0);
    bw = PyMem_Malloc(sizeof(W));
    if (body == NULL || bw == NULL) {
        if (bw == NULL)
            PyErr_NoMemory();
        goto done;
    }
    w_init(bw, body);
    if (fun_prefix(bw, f, arity, index) < 0)
        goto done;
    for (i = 0; i < nfree; i++)
        if (enc(bw, PyTuple_GET_ITEM(f[7], i), depth) < 0)
            goto done;
    if (w_flush(bw) < 0)
        goto done;
    blen = PyByteArray_GET_SIZE(body);
    if (blen + 4 > 0xFFFFFFFFLL) {
        enc_err("fun too large to encode");
        goto done;
    }
    p = w_take(w, 5);
    if (p == NULL)
        goto done;
    p[0] = NEW_FUN_EXT;
    put32(p + 1, (uint32_t)(blen + 4));
    r = w_bytes(w, PyByteArray_AS_STRING(body), blen);
done:
    if (bw != NULL) {
        w_free(bw);
        PyMem_Free(bw);
    }
    Py_XDECREF(body);
    for (i = 0; i < 8; i++)
        Py_DECREF(f[i]);
    return r;
}

static int
enc_float(W *w, PyObject *t)
{
    double f = PyFloat_AS_DOUBLE(t);
    union {
        uint64_t u;
        double f;
    } x;
    char *p;
    if (!isfinite(f)) {
        PyObject *r = PyObject_Repr(t);
        if (r != NULL) {
            enc_err("Erlang has no float %U", r);
            Py_DECREF(r);
        }
        return -1;
    }
    p = w_take(w, 9);
    if (p == NULL)
        return -1;
    x.f = f;
    p[0] = NEW_FLOAT_EXT;
    put64(p + 1, x.u);
    return 0;
}

static int
enc_buffer(W *w, PyObject *t)
{
    PyObject *b;
    int r;
    if (t == w->out && w_flush(w) < 0) /* bytes(out) sees everything written so far */
        return -1;
    b = PyBytes_FromObject(t);
    if (b == NULL)
        return -1;
    r = enc_binary(w, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b));
    Py_DECREF(b);
    return r;
}

static const char ATOM_TRUE[] = {SMALL_ATOM_UTF8_EXT, 4, 't', 'r', 'u', 'e'};
static const char ATOM_FALSE[] = {SMALL_ATOM_UTF8_EXT, 5, 'f', 'a', 'l', 's', 'e'};
static const char ATOM_NIL[] = {SMALL_ATOM_UTF8_EXT, 3, 'n', 'i', 'l'};

/* Containers: one level of nesting. */
static int
enc_container(W *w, PyObject *t, int depth, int (*fn)(W *, PyObject *, int))
{
    int r;
    if (depth >= recursion_depth)
        return enc_deep(w, t);
    if (Py_EnterRecursiveCall(" while encoding an Erlang term"))
        return -1;
    r = fn(w, t, depth + 1);
    Py_LeaveRecursiveCall();
    return r;
}

static int
enc_tuple(W *w, PyObject *t, int depth)
{
    Py_ssize_t n = PyTuple_GET_SIZE(t), i;
    if (w_tuple_head(w, n) < 0)
        return -1;
    for (i = 0; i < n; i++)
        if (enc(w, PyTuple_GET_ITEM(t, i), depth) < 0)
            return -1;
    return 0;
}

/* Known classes with a fast path returning 1 when the fields call for the Python encoder. */
static int
enc_known_nested(W *w, PyObject *t, int depth)
{
    PyTypeObject *tp = Py_TYPE(t);
    if (tp == C_Improper.tp)
        return enc_improper(w, t, depth);
    if (tp == C_Map.tp)
        return enc_map(w, t, depth);
    return enc_fun(w, t, depth);
}

static int
enc(W *w, PyObject *t, int depth)
{
    PyTypeObject *tp = Py_TYPE(t);
    int r;

    if (tp == AtomType)
        return enc_atom(w, t);
    if (tp == &PyLong_Type)
        return enc_int(w, t);
    if (tp == &PyTuple_Type)
        return enc_container(w, t, depth, enc_tuple);
    if (tp == &PyBytes_Type)
        return enc_binary(w, PyBytes_AS_STRING(t), PyBytes_GET_SIZE(t));
    if (tp == &PyList_Type)
        return enc_container(w, t, depth, enc_list);
    if (tp == &PyUnicode_Type)
        return enc_str(w, t);
    if (tp == &PyDict_Type)
        return enc_container(w, t, depth, enc_dict);
    if (tp == &PyBool_Type)
        return t == Py_True ? w_bytes(w, ATOM_TRUE, sizeof ATOM_TRUE) : w_bytes(w, ATOM_FALSE, sizeof ATOM_FALSE);
    if (t == Py_None)
        return w_bytes(w, ATOM_NIL, sizeof ATOM_NIL);
    if (tp == &PyFloat_Type)
        return enc_float(w, t);
    if (tp == C_Pid.tp)
        r = enc_pid(w, t);
    else if (tp == C_Ref.tp)
        r = enc_ref(w, t);
    else if (tp == C_Port.tp)
        r = enc_port(w, t);
    else if (tp == C_Export.tp)
        r = enc_export(w, t);
    else if (tp == C_BitBinary.tp)
        r = enc_bitbinary(w, t);
    else if (tp == C_Improper.tp || tp == C_Map.tp || tp == C_Fun.tp)
        r = enc_container(w, t, depth, enc_known_nested);
    else if (tp == &PyByteArray_Type || tp == &PyMemoryView_Type)
        return enc_buffer(w, t);
    else
        return enc_delegate(w, t);
    if (r > 0) /* unusual field values: the Python encoder for the class decides */
        return enc_delegate(w, t);
    return r;
}

/* ------------------------------------------------------------------------------------ */
/* Encoding with an explicit stack (codec._enc_deep)                                    */
/* ------------------------------------------------------------------------------------ */

enum { EF_TUPLE, EF_LIST, EF_DICT, EF_MAP, EF_IMPROPER, EF_FUN };

typedef struct {
    int kind;
    PyObject *obj;     /* owned: the tuple, list, dict, Map items, improper list, fun free variables */
    Py_ssize_t i, n;   /* next index (dict: PyDict_Next position) and size */
    PyObject *pending; /* EF_DICT: the value to write after its key (owned) */
    Py_ssize_t at;     /* EF_FUN: where its size field is, counted from the start of out */
} EFrame;

static EFrame *
eframe_push(EFrame **st, Py_ssize_t *sp, Py_ssize_t *cap, int kind, PyObject *obj, Py_ssize_t n)
{
    EFrame *f;
    if (*sp == *cap) {
        Py_ssize_t ncap = *cap ? 2 * *cap : 64;
        EFrame *nst = PyMem_Realloc(*st, ncap * sizeof(EFrame));
        if (nst == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        *st = nst;
        *cap = ncap;
    }
    f = &(*st)[(*sp)++];
    f->kind = kind;
    f->obj = Py_NewRef(obj);
    f->i = 0;
    f->n = n;
    f->pending = NULL;
    f->at = 0;
    return f;
}

/* Write one value; a container of the exact types pushes a frame for its contents. */
static int
enc_deep_one(W *w, PyObject *x, EFrame **st, Py_ssize_t *sp, Py_ssize_t *cap)
{
    PyTypeObject *tp = Py_TYPE(x);
    Py_ssize_t n, i;
    char *p;
    if (tp == &PyTuple_Type) {
        n = PyTuple_GET_SIZE(x);
        if (w_tuple_head(w, n) < 0)
            return -1;
        if (n && eframe_push(st, sp, cap, EF_TUPLE, x, n) == NULL)
            return -1;
        return 0;
    }
    if (tp == &PyList_Type) {
        int h;
        n = PyList_GET_SIZE(x);
        h = w_list_head(w, x, n);
        if (h != 0)
            return h < 0 ? -1 : 0;
        return eframe_push(st, sp, cap, EF_LIST, x, n) == NULL ? -1 : 0;
    }
    if (tp == &PyDict_Type) {
        n = PyDict_GET_SIZE(x);
        if (w_dict_head(w, n) < 0)
            return -1;
        return eframe_push(st, sp, cap, EF_DICT, x, n) == NULL ? -1 : 0;
    }
    if (tp == C_Map.tp) {
        PyObject *items = SLOT(x, C_Map.off[0]);
        if (items == NULL || !PyTuple_CheckExact(items))
            return enc_delegate(w, x);
        n = PyTuple_GET_SIZE(items);
        for (i = 0; i < n; i++) {
            PyObject *kv = PyTuple_GET_ITEM(items, i);
            if (!PyTuple_CheckExact(kv) || PyTuple_GET_SIZE(kv) != 2)
                return enc_delegate(w, x);
        }
        if (w_head32(w, MAP_EXT, n) < 0)
            return -1;
        return eframe_push(st, sp, cap, EF_MAP, items, 2 * n) == NULL ? -1 : 0;
    }
    if (tp == C_Improper.tp) {
        PyObject *elements = SLOT(x, C_Improper.off[0]), *tail = SLOT(x, C_Improper.off[1]);
        if (elements == NULL || tail == NULL || !PyTuple_CheckExact(elements))
            return enc_delegate(w, x);
        n = PyTuple_GET_SIZE(elements);
        if (w_head32(w, LIST_EXT, n) < 0)
            return -1;
        return eframe_push(st, sp, cap, EF_IMPROPER, x, n + 1) == NULL ? -1 : 0;
    }
    if (tp == C_Fun.tp) {
        PyObject *f[8];
        long arity;
        uint32_t index;
        Py_ssize_t at;
        EFrame *fr;
        int k = fun_check(x, f, &arity, &index), r;
        if (k < 0)
            return -1;
        if (k > 0)
            return enc_delegate(w, x);
        for (i = 0; i < 8; i++)
            Py_INCREF(f[i]);
        /* written in place; the size is patched in once the free variables are done */
        r = w_byte(w, NEW_FUN_EXT);
        at = PyByteArray_GET_SIZE(w->out) + w->len;
        if (r == 0) {
            if ((p = w_take(w, 4)) == NULL)
                r = -1;
            else
                memset(p, 0, 4);
        }
        if (r == 0)
            r = fun_prefix(w, f, arity, index);
        if (r == 0) {
            fr = eframe_push(st, sp, cap, EF_FUN, f[7], PyTuple_GET_SIZE(f[7]));
            if (fr == NULL)
                r = -1;
            else
                fr->at = at;
        }
        for (i = 0; i < 8; i++)
            Py_DECREF(f[i]);
        return r;
    }
    return enc(w, x, 0); /* not a container of the exact types: no recursion in C */
}

/* The frame's next value (a new reference), or NULL: done (no error set) or an error. */
static PyObject *
eframe_next(EFrame *f)
{
    PyObject *x = NULL;
    switch (f->kind) {
    case EF_TUPLE:
        if (f->i < f->n)
            x = Py_NewRef(PyTuple_GET_ITEM(f->obj, f->i++));
        break;
    case EF_FUN:
        if (f->i < f->n)
            x = Py_NewRef(PyTuple_GET_ITEM(f->obj, f->i++));
        break;
    case EF_LIST: /* `for x in t`: the length is re-read at every step, as a list iterator does */
        if (f->i < PyList_GET_SIZE(f->obj))
            x = Py_NewRef(PyList_GET_ITEM(f->obj, f->i++));
        break;
    case EF_MAP: /* obj: the items, n: twice their number */
        if (f->i < f->n) {
            x = Py_NewRef(PyTuple_GET_ITEM(PyTuple_GET_ITEM(f->obj, f->i / 2), f->i % 2));
            f->i++;
        }
        break;
    case EF_IMPROPER: {
        PyObject *elements = SLOT(f->obj, C_Improper.off[0]);
        if (f->i < f->n - 1)
            x = Py_NewRef(PyTuple_GET_ITEM(elements, f->i++));
        else if (f->i == f->n - 1) {
            f->i++;
            x = Py_NewRef(SLOT(f->obj, C_Improper.off[1]));
        }
        break;
    }
    case EF_DICT: {
        PyObject *k, *v;
        if (f->pending != NULL) {
            x = f->pending;
            f->pending = NULL;
            break;
        }
        if (f->i > 0 && PyDict_GET_SIZE(f->obj) != f->n) {
            PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
            return NULL;
        }
        if (PyDict_Next(f->obj, &f->i, &k, &v)) {
            x = Py_NewRef(k);
            f->pending = Py_NewRef(v);
        }
        break;
    }
    }
    return x;
}

/* Once a frame is done: what ends it (the NIL_EXT of a list, the size of a fun). */
static int
eframe_end(W *w, EFrame *f)
{
    if (f->kind == EF_LIST)
        return w_byte(w, NIL_EXT);
    if (f->kind == EF_FUN) {
        Py_ssize_t in_out = PyByteArray_GET_SIZE(w->out), size = in_out + w->len - f->at;
        char *p;
        if (size > 0xFFFFFFFFLL) {
            enc_err("fun too large to encode");
            return -1;
        }
        p = f->at >= in_out ? w->buf + (f->at - in_out) : PyByteArray_AS_STRING(w->out) + f->at;
        put32(p, (uint32_t)size);
    }
    return 0;
}

static void
eframe_clear(EFrame *f)
{
    Py_CLEAR(f->obj);
    Py_CLEAR(f->pending);
}

/* enc() for a container, without recursion: what enc_container hands over once terms nest
   recursion_depth levels. The same bytes and errors as the recursive encoder. */
static int
enc_deep(W *w, PyObject *t)
{
    EFrame *st = NULL;
    Py_ssize_t sp = 0, cap = 0;
    PyObject *x = Py_NewRef(t);
    int r;
    for (;;) {
        r = enc_deep_one(w, x, &st, &sp, &cap);
        Py_DECREF(x);
        if (r < 0)
            goto fail;
        for (;;) {
            EFrame *f;
            if (sp == 0) {
                PyMem_Free(st);
                return 0;
            }
            f = &st[sp - 1];
            x = eframe_next(f);
            if (x != NULL)
                break;
            if (PyErr_Occurred() || eframe_end(w, f) < 0)
                goto fail;
            eframe_clear(f);
            sp--;
        }
    }
fail:
    while (sp > 0)
        eframe_clear(&st[--sp]);
    PyMem_Free(st);
    return -1;
}

PyDoc_STRVAR(encode_into_doc,
"encode_into(term, out, depth=0) -> None\n\n"
"codec._enc in C: append the encoding of ``term`` (no version byte) to the bytearray ``out``;\n"
"``depth`` is the nesting already recursed into (the Python encoders of containers pass it).");

static PyObject *
encode_into(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    W w;
    int r;
    Py_ssize_t depth = 0;
    if (!initialized)
        return not_initialized();
    if (nargs != 2 && nargs != 3) {
        PyErr_Format(PyExc_TypeError, "encode_into() takes 2 or 3 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!PyByteArray_Check(args[1]))
        return PyObject_Vectorcall(py_enc, args, nargs, NULL);
    if (nargs == 3) {
        depth = PyLong_CheckExact(args[2]) ? PyLong_AsSsize_t(args[2]) : -1;
        if (depth < 0 || depth > INT_MAX) { /* not a plain depth: the Python encoder's semantics */
            PyErr_Clear();
            return PyObject_Vectorcall(py_enc, args, nargs, NULL);
        }
    }
    w_init(&w, args[1]);
    r = enc(&w, args[0], (int)depth);
    assert((r < 0) == (PyErr_Occurred() != NULL));
    if (r == 0)
        r = w_flush(&w);
    else {
        /* leave in `out` what the Python encoder would have written before failing */
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        if (w_flush(&w) < 0)
            PyErr_Clear();
        PyErr_Restore(et, ev, tb);
    }
    w_free(&w);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------------------ */
/* init                                                                                 */
/* ------------------------------------------------------------------------------------ */

static PyObject *
ns_get(PyObject *ns, const char *name)
{
    PyObject *v = PyDict_GetItemString(ns, name);
    if (v == NULL) {
        PyErr_Format(PyExc_KeyError, "init(): the codec namespace has no %s", name);
        return NULL;
    }
    return Py_NewRef(v);
}

static int
ns_type(PyObject *ns, const char *name, PyTypeObject **out)
{
    PyObject *v = ns_get(ns, name);
    if (v == NULL)
        return -1;
    if (!PyType_Check(v)) {
        Py_DECREF(v);
        PyErr_Format(PyExc_TypeError, "init(): %s is not a class", name);
        return -1;
    }
    *out = (PyTypeObject *)v;
    return 0;
}

static int
ns_int(PyObject *ns, const char *name, Py_ssize_t *out, Py_ssize_t hi)
{
    PyObject *v = ns_get(ns, name);
    Py_ssize_t x;
    if (v == NULL)
        return -1;
    x = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (x < 1 || x > hi) {
        PyErr_Format(PyExc_ValueError, "init(): %s = %zd outside 1..%zd", name, x, hi);
        return -1;
    }
    *out = x;
    return 0;
}

/* Offsets of a slotted class's fields, through their member descriptors. */
static int
slot_class(PyObject *ns, const char *cname, SlotClass *c, const char *const *names)
{
    PyTypeObject *tp;
    int i;
    if (ns_type(ns, cname, &tp) < 0)
        return -1;
    if (tp->tp_itemsize != 0 || tp->tp_alloc == NULL) {
        PyErr_Format(PyExc_TypeError, "init(): %s is not a plain slotted class", cname);
        Py_DECREF(tp);
        return -1;
    }
    for (i = 0; names[i] != NULL; i++) {
        PyObject *d = PyObject_GetAttrString((PyObject *)tp, names[i]);
        PyMemberDef *m;
        if (d == NULL) {
            Py_DECREF(tp);
            return -1;
        }
        if (!Py_IS_TYPE(d, &PyMemberDescr_Type) ||
            !PyType_IsSubtype(tp, ((PyMemberDescrObject *)d)->d_common.d_type)) {
            PyErr_Format(PyExc_TypeError, "init(): %s.%s is not a slot", cname, names[i]);
            Py_DECREF(d);
            Py_DECREF(tp);
            return -1;
        }
        m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != T_OBJECT_EX || (m->flags & READONLY) || m->offset <= 0 ||
            m->offset + (Py_ssize_t)sizeof(PyObject *) > tp->tp_basicsize) {
            PyErr_Format(PyExc_TypeError, "init(): %s.%s is not an object slot", cname, names[i]);
            Py_DECREF(d);
            Py_DECREF(tp);
            return -1;
        }
        c->off[i] = m->offset;
        Py_DECREF(d);
    }
    Py_XDECREF(c->tp);
    c->tp = tp;
    c->n = i;
    return 0;
}

static const char *const F_PID[] = {"node", "id", "serial", "creation", NULL};
static const char *const F_REF[] = {"node", "creation", "ids", NULL};
static const char *const F_PORT[] = {"node", "id", "creation", NULL};
static const char *const F_EXPORT[] = {"module", "function", "arity", NULL};
static const char *const F_FUN[] = {"arity", "uniq", "index", "module", "old_index", "old_uniq", "pid",
                                    "free_vars", NULL};
static const char *const F_BITBINARY[] = {"data", "bits", NULL};
static const char *const F_IMPROPER[] = {"elements", "tail", NULL};
static const char *const F_MAP[] = {"_items", NULL};

static int
set_obj(PyObject **slot, PyObject *ns, const char *name)
{
    PyObject *v = ns_get(ns, name);
    if (v == NULL)
        return -1;
    Py_XSETREF(*slot, v);
    return 0;
}

PyDoc_STRVAR(init_doc,
"init(namespace) -> None\n\n"
"Take the term classes, errors, limits and helpers from codec.py's globals() (called\n"
"once by codec.py at import, before it rebinds _decode/_enc to this module).");

static PyObject *
init(PyObject *self, PyObject *ns)
{
    PyTypeObject *atom = NULL;
    PyObject *names = NULL, *t, *f, *nl;
    if (!PyDict_Check(ns)) {
        PyErr_SetString(PyExc_TypeError, "init() takes the codec module's globals() dict");
        return NULL;
    }
    initialized = 0;
    if (ns_type(ns, "Atom", &atom) < 0)
        return NULL;
    if (!PyType_IsSubtype(atom, &PyUnicode_Type)) {
        Py_DECREF(atom);
        PyErr_SetString(PyExc_TypeError, "init(): Atom is not a str subclass");
        return NULL;
    }
    Py_XSETREF(AtomType, atom);
    if (slot_class(ns, "Pid", &C_Pid, F_PID) < 0 || slot_class(ns, "Reference", &C_Ref, F_REF) < 0 ||
        slot_class(ns, "Port", &C_Port, F_PORT) < 0 || slot_class(ns, "Export", &C_Export, F_EXPORT) < 0 ||
        slot_class(ns, "Fun", &C_Fun, F_FUN) < 0 || slot_class(ns, "BitBinary", &C_BitBinary, F_BITBINARY) < 0 ||
        slot_class(ns, "ImproperList", &C_Improper, F_IMPROPER) < 0 || slot_class(ns, "Map", &C_Map, F_MAP) < 0)
        return NULL;
    if (set_obj(&DecodeErrorCls, ns, "DecodeError") < 0 || set_obj(&EncodeErrorCls, ns, "EncodeError") < 0 ||
        set_obj(&py_exact_key, ns, "exact_key") < 0 || set_obj(&py_atom_enc, ns, "_atom_enc") < 0 ||
        set_obj(&py_atom_bytes, ns, "_atom_bytes") < 0 || set_obj(&py_encoders, ns, "_ENCODERS") < 0 ||
        set_obj(&py_fallback_encoder, ns, "_fallback_encoder") < 0 || set_obj(&py_decode, ns, "_decode") < 0 ||
        set_obj(&py_enc, ns, "_enc") < 0 || set_obj(&py_bounded_repr, ns, "bounded_repr") < 0)
        return NULL;
    if (!PyDict_CheckExact(py_atom_bytes) || !PyDict_CheckExact(py_encoders)) {
        PyErr_SetString(PyExc_TypeError, "init(): _atom_bytes and _ENCODERS must be dicts");
        return NULL;
    }
    if (ns_int(ns, "RECURSION_DEPTH", &recursion_depth, 10000) < 0 ||
        ns_int(ns, "MAX_HASHED_KEY_DEPTH", &max_hashed_key_depth, 10000) < 0 ||
        ns_int(ns, "MAP_HASH_CHECK", &map_hash_check, PY_SSIZE_T_MAX) < 0 ||
        ns_int(ns, "MAX_ATOM_CHARS", &max_atom_chars, 65535) < 0 || ns_int(ns, "MAX_REF_WORDS", &max_ref_words, 8) < 0)
        return NULL;
    names = PyDict_New();
    if (names == NULL)
        return NULL;
    t = PyObject_CallFunction((PyObject *)AtomType, "s", "true");
    f = PyObject_CallFunction((PyObject *)AtomType, "s", "false");
    nl = PyObject_CallFunction((PyObject *)AtomType, "s", "nil");
    if (t == NULL || f == NULL || nl == NULL || PyDict_SetItem(names, Py_True, t) < 0 ||
        PyDict_SetItem(names, Py_False, f) < 0 || PyDict_SetItem(names, Py_None, nl) < 0) {
        Py_XDECREF(t);
        Py_XDECREF(f);
        Py_XDECREF(nl);
        Py_DECREF(names);
        return NULL;
    }
    Py_DECREF(t);
    Py_DECREF(f);
    Py_DECREF(nl);
    Py_XSETREF(special_names, names);
    acache_clear(); /* the Atom class may have changed */
    initialized = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"init", (PyCFunction)init, METH_O, init_doc},
    {"decode_at", (PyCFunction)(void (*)(void))decode_at, METH_FASTCALL, decode_at_doc},
    {"encode_into", (PyCFunction)(void (*)(void))encode_into, METH_FASTCALL, encode_into_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    "erl_interop._speedups",
    "Optional C accelerator for erl_interop.codec (see _speedups.c for the theory of operation).",
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&moduledef);
}
