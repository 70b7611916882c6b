/*
 * team-and-registry in C, freestanding (no libc), compiled with `zig cc` to wasm32: ABI v1 with a
 * bump allocator and a small JSON reader.
 *
 * The policy: workloads (Pod; Deployment, ReplicaSet, StatefulSet, DaemonSet and Job through
 * spec.template.spec) must carry the label `team` (non-empty) in their own metadata.labels, and
 * no container or init container may use an image from a registry listed in the settings'
 * `denied_registries`. The exact rules and messages are in ../README.md.
 *
 * How it reads JSON (the same subset as the WAT example): the whole input is first checked in
 * one pass (balanced brackets, "key": value members, closed strings, true/false/null, runs of
 * number characters, at most 128 levels, nothing after the value); then the policy navigates the
 * structure, finding a key only among the members of the object it asks about. Strings are taken
 * as written: escapes are not decoded, so keys with escapes never match, compared values are
 * compared as written, and values quoted in messages are copied as written (still valid JSON).
 * Of duplicate keys the last one counts.
 */

#include <stddef.h>
#include <stdint.h>

/* ---- memory ------------------------------------------------------------------------------ */

extern unsigned char __heap_base;
static uintptr_t heap = (uintptr_t)&__heap_base;

/* Makes sure linear memory reaches `limit`; traps when the host refuses to grow it. */
static void reserve(uintptr_t limit) {
    uintptr_t have = __builtin_wasm_memory_size(0) * 65536;
    if (limit > have && __builtin_wasm_memory_grow(0, (limit - have + 65535) / 65536) == (size_t)-1)
        __builtin_trap();
}

static unsigned char *bump(size_t n) {
    uintptr_t p = (heap + 7) & ~(uintptr_t)7;
    heap = p + n;
    reserve(heap);
    return (unsigned char *)p;
}

/* ABI v1: room for the host's input. Never freed: every evaluation gets a fresh instance. */
__attribute__((export_name("allocate"))) unsigned char *allocate(int32_t len) {
    return bump((size_t)len);
}

/* ---- output ------------------------------------------------------------------------------ */

static unsigned char *out_start, *out;

static void begin_output(void) {
    out_start = out = (unsigned char *)((heap + 7) & ~(uintptr_t)7);
}

static void emit(const unsigned char *p, size_t n) {
    reserve((uintptr_t)out + n);
    for (size_t i = 0; i < n; i++) out[i] = p[i];
    out += n;
}

static size_t length(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

static void emit_text(const char *s) { emit((const unsigned char *)s, length(s)); }

static int64_t packed(void) {
    return (int64_t)((uint64_t)(uintptr_t)out_start << 32 | (uint64_t)(out - out_start));
}

/* ---- reading JSON ------------------------------------------------------------------------ */

typedef const unsigned char *pos; /* a position in the input, or NULL for "none" */

static pos end;

static int at(pos p) { return p < end ? *p : -1; }

static pos ws(pos p) {
    while (at(p) == ' ' || at(p) == '\t' || at(p) == '\n' || at(p) == '\r') p++;
    return p;
}

/* p at an opening quote: after the closing quote, or NULL. */
static pos skip_string(pos p) {
    for (p++; p < end; p++) {
        if (*p == '"') return p + 1;
        if (*p < 0x20) return NULL;
        if (*p == '\\') p++;
    }
    return NULL;
}

static int literal(pos p, const char *word) {
    size_t n = length(word);
    if ((size_t)(end - p) < n) return 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)word[i]) return 0;
    return 1;
}

static int number_char(int c) {
    return (c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-';
}

/* p at a value: after it, or NULL if it is not well formed. */
static pos skip_value(pos p, int depth) {
    int c = at(p);
    if (c == '"') return skip_string(p);
    if (c == '{' || c == '[') {
        int close = c + 2; /* '}' and ']' */
        if (depth >= 128) return NULL;
        p = ws(p + 1);
        if (at(p) == close) return p + 1;
        for (;;) {
            if (c == '{') {
                if (at(p) != '"' || !(p = skip_string(p))) return NULL;
                p = ws(p);
                if (at(p) != ':') return NULL;
                p = ws(p + 1);
            }
            if (!(p = skip_value(p, depth + 1))) return NULL;
            p = ws(p);
            if (at(p) == ',') {
                p = ws(p + 1);
                continue;
            }
            return at(p) == close ? p + 1 : NULL;
        }
    }
    if (c == 't') return literal(p, "true") ? p + 4 : NULL;
    if (c == 'f') return literal(p, "false") ? p + 5 : NULL;
    if (c == 'n') return literal(p, "null") ? p + 4 : NULL;
    if (c != '-' && !(c >= '0' && c <= '9')) return NULL;
    do p++;
    while (number_char(at(p)));
    return p;
}

/* Checks that the input holds one well-formed value and nothing else: its position, or NULL. */
static pos parse(const unsigned char *ptr, int32_t len) {
    end = ptr + len;
    pos root = ws(ptr);
    pos after = skip_value(root, 0);
    return after && ws(after) == end ? root : NULL;
}

/* What follows assumes the input passed parse(). */

static int is(pos v, int opening) { return v && *v == opening; }

/* A string value's content, as written between its quotes. */
typedef struct {
    pos p;
    size_t n;
} text;

static text content(pos v) { return (text){v + 1, (size_t)(skip_string(v) - v - 2)}; }

static int equals(text t, const char *s) {
    size_t n = length(s);
    if (t.n != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (t.p[i] != (unsigned char)s[i]) return 0;
    return 1;
}

static int same(text a, text b) {
    if (a.n != b.n) return 0;
    for (size_t i = 0; i < a.n; i++)
        if (a.p[i] != b.p[i]) return 0;
    return 1;
}

/* The value of member `key` of the object at obj, or NULL (also when obj is no object). */
static pos get(pos obj, const char *key) {
    pos found = NULL;
    if (!is(obj, '{')) return NULL;
    pos p = ws(obj + 1);
    if (*p == '}') return NULL;
    for (;;) {
        text k = content(p);
        p = ws(ws(skip_string(p)) + 1);
        if (equals(k, key)) found = p;
        p = ws(skip_value(p, 0));
        if (*p != ',') return found;
        p = ws(p + 1);
    }
}

/* The first element of the array at arr, or NULL. */
static pos first(pos arr) {
    if (!is(arr, '[')) return NULL;
    pos p = ws(arr + 1);
    return *p == ']' ? NULL : p;
}

/* The element after el, or NULL at the end. */
static pos next(pos el) {
    pos p = ws(skip_value(el, 0));
    return *p == ',' ? ws(p + 1) : NULL;
}

/* ---- the policy -------------------------------------------------------------------------- */

static text kind, name;
static pos denied;
static int violations;

static void emit_span(text t) { emit(t.p, t.n); }

/* Starts a violation: the response's head before the first, "; " before the others. */
static void violation(void) {
    emit_text(violations++ ? "; " : "{\"accepted\":false,\"message\":\"");
    emit_span(kind);
    emit_text(" ");
    emit_span(name);
}

static int is_denied(text registry) {
    for (pos el = first(denied); el; el = next(el))
        if (is(el, '"') && same(content(el), registry)) return 1;
    return 0;
}

/* The registry host of an image reference: the part before the first '/' when it contains '.'
 * or ':' or is "localhost", else docker.io. An escaped byte is never the '/'. */
static text registry(text image) {
    static const char docker_io[] = "docker.io";
    text hub = {(pos)docker_io, sizeof docker_io - 1};
    for (size_t i = 0; i < image.n; i++) {
        if (image.p[i] == '\\') {
            i++;
            continue;
        }
        if (image.p[i] != '/') continue;
        text host = {image.p, i};
        if (equals(host, "localhost")) return host;
        for (size_t j = 0; j < i; j++)
            if (image.p[j] == '.' || image.p[j] == ':') return host;
        return hub;
    }
    return hub;
}

static void check_containers(pos list, const char *noun) {
    for (pos c = first(list); c; c = next(c)) {
        pos image = get(c, "image");
        if (!is(image, '"')) continue;
        text reference = content(image), host = registry(reference);
        if (!is_denied(host)) continue;
        violation();
        emit_text(noun);
        pos cname = get(c, "name");
        if (is(cname, '"')) emit_span(content(cname));
        emit_text("\\\": image \\\"");
        emit_span(reference);
        emit_text("\\\" is from denied registry \\\"");
        emit_span(host);
        emit_text("\\\"");
    }
}

static int workload(text k) {
    return equals(k, "Deployment") || equals(k, "ReplicaSet") || equals(k, "StatefulSet") ||
           equals(k, "DaemonSet") || equals(k, "Job");
}

/* ABI v1: judges {"request": ..., "settings": ...}. */
__attribute__((export_name("validate"))) int64_t validate(const unsigned char *ptr, int32_t len) {
    begin_output();
    violations = 0;
    pos root = parse(ptr, len);
    if (!is(root, '{')) {
        emit_text("{\"accepted\":false,\"message\":\"policy input was malformed: not a JSON object\"}");
        return packed();
    }
    pos request = get(root, "request");
    denied = get(get(root, "settings"), "denied_registries");
    pos k = get(get(request, "kind"), "kind");
    pos object = get(request, "object");
    if (is(object, '{') && is(k, '"')) {
        kind = content(k);
        int pod = equals(kind, "Pod");
        if (pod || workload(kind)) {
            pos metadata = get(object, "metadata");
            pos n = get(metadata, "name");
            static const char unnamed[] = "<unnamed>";
            name = is(n, '"') ? content(n) : (text){(pos)unnamed, sizeof unnamed - 1};
            pos team = get(get(metadata, "labels"), "team");
            if (!is(team, '"') || team[1] == '"') {
                violation();
                emit_text(": missing required label \\\"team\\\"");
            }
            pos spec = get(object, "spec");
            if (!pod) spec = get(get(spec, "template"), "spec");
            check_containers(get(spec, "containers"), ", container \\\"");
            check_containers(get(spec, "initContainers"), ", init container \\\"");
        }
    }
    emit_text(violations ? "\"}" : "{\"accepted\":true}");
    return packed();
}

static int64_t invalid(const char *problem, text quoted, const char *after) {
    emit_text("{\"valid\":false,\"message\":\"");
    emit_text(problem);
    emit_span(quoted);
    emit_text(after);
    emit_text("\"}");
    return packed();
}

/* ABI v1: checks the settings: null, or an object whose only key is denied_registries, a list
 * of registry hosts (non-empty, no '/'). The first problem in document order is reported. */
__attribute__((export_name("validate_settings"))) int64_t validate_settings(const unsigned char *ptr,
                                                                            int32_t len) {
    static const text nothing = {NULL, 0};
    begin_output();
    pos root = parse(ptr, len);
    if (!root) return invalid("settings are not valid JSON", nothing, "");
    if (literal(root, "null")) {
        emit_text("{\"valid\":true}");
        return packed();
    }
    if (!is(root, '{')) return invalid("settings must be an object", nothing, "");
    pos p = ws(root + 1);
    while (*p != '}') {
        text key = content(p);
        pos value = ws(ws(skip_string(p)) + 1);
        if (!equals(key, "denied_registries")) return invalid("unknown setting \\\"", key, "\\\"");
        if (!is(value, '[')) return invalid("denied_registries must be a list of strings", nothing, "");
        for (pos el = first(value); el; el = next(el)) {
            if (!is(el, '"')) return invalid("denied_registries must be a list of strings", nothing, "");
            text host = content(el);
            int slash = 0;
            for (size_t i = 0; i < host.n; i++) slash |= host.p[i] == '/';
            if (host.n == 0 || slash)
                return invalid("denied_registries: \\\"", host, "\\\" is not a registry host");
        }
        p = ws(skip_value(value, 0));
        if (*p == ',') p = ws(p + 1);
    }
    emit_text("{\"valid\":true}");
    return packed();
}
