;; team-and-registry, hand-written in the WebAssembly text format: ABI v1 with no toolchain at all.
;;
;; The policy: workloads (Pod; Deployment, ReplicaSet, StatefulSet, DaemonSet and Job through
;; spec.template.spec) must carry the label `team` (non-empty) in their own metadata.labels, and
;; no container or init container may use an image from a registry listed in the settings'
;; `denied_registries`. The exact rules and messages are in ../README.md.
;;
;; How it reads JSON. `validate` first checks the whole input in one pass ($skip_value over the
;; root): brackets and braces nest and close, members are "key": value separated by commas,
;; strings close (a backslash always escapes the next byte), literals are true/false/null, numbers
;; are runs of number characters, nothing follows but whitespace, nesting is at most 128 deep. An
;; input that fails is rejected as malformed. After that it navigates the structure ($get walks an
;; object's members, skipping each value whole), so a key or value is only ever found where it
;; stands, never by searching the text. Strings are handled as they are written in the JSON text:
;; escape sequences are not decoded. Keys with escapes never match the keys the policy looks for,
;; the strings it compares (kind, the registry part of an image, denied registries) are compared
;; as written, and the strings it quotes in messages are copied as written, which keeps them valid
;; JSON. The Kubernetes API server and the webhook only escape quotes, backslashes and control
;; characters, none of which occur in kinds, names or image references. Numbers are not checked
;; beyond their characters. Of duplicate keys the last one counts, as in serde_json and Go.
;;
;; Memory: constants below 2048 (each a length byte, then the bytes); a bump allocator above it
;; that never frees (every evaluation gets a fresh instance); the output is written after the
;; input, growing memory as needed.
(module
  (memory (export "memory") 1)

  ;; Keys, kinds and literals.
  (data (i32.const 0) "\07request")
  (data (i32.const 32) "\08settings")
  (data (i32.const 64) "\04kind")
  (data (i32.const 96) "\06object")
  (data (i32.const 128) "\08metadata")
  (data (i32.const 160) "\04name")
  (data (i32.const 192) "\06labels")
  (data (i32.const 224) "\04team")
  (data (i32.const 256) "\04spec")
  (data (i32.const 288) "\08template")
  (data (i32.const 320) "\0acontainers")
  (data (i32.const 352) "\0einitContainers")
  (data (i32.const 384) "\05image")
  (data (i32.const 416) "\11denied_registries")
  (data (i32.const 448) "\09docker.io")
  (data (i32.const 480) "\09localhost")
  (data (i32.const 512) "\03Pod")
  (data (i32.const 544) "\0aDeployment")
  (data (i32.const 576) "\0bStatefulSet")
  (data (i32.const 608) "\09DaemonSet")
  (data (i32.const 640) "\0aReplicaSet")
  (data (i32.const 672) "\03Job")
  (data (i32.const 704) "\09<unnamed>")
  (data (i32.const 736) "\04true")
  (data (i32.const 768) "\05false")
  (data (i32.const 800) "\04null")
  ;; Output pieces (inside the message string, so quotes are escaped).
  (data (i32.const 832) "\11{\"accepted\":true}")
  (data (i32.const 864) "\1d{\"accepted\":false,\"message\":\"")
  (data (i32.const 896) "\02\"}")
  (data (i32.const 928) "\21: missing required label \\\"team\\\"")
  (data (i32.const 976) "\0e, container \\\"")
  (data (i32.const 1008) "\13, init container \\\"")
  (data (i32.const 1040) "\0c\\\": image \\\"")
  (data (i32.const 1072) "\1d\\\" is from denied registry \\\"")
  (data (i32.const 1120) "\02\\\"")
  (data (i32.const 1152) "\02; ")
  (data (i32.const 1184) "\4c{\"accepted\":false,\"message\":\"policy input was malformed: not a JSON object\"}")
  (data (i32.const 1280) "\0e{\"valid\":true}")
  (data (i32.const 1312) "\1a{\"valid\":false,\"message\":\"")
  (data (i32.const 1344) "\1bsettings are not valid JSON")
  (data (i32.const 1376) "\1asettings must be an object")
  (data (i32.const 1408) "\2bdenied_registries must be a list of strings")
  (data (i32.const 1456) "\12unknown setting \\\"")
  (data (i32.const 1488) "\15denied_registries: \\\"")
  (data (i32.const 1520) "\19\\\" is not a registry host")

  ;; Next free byte of the bump allocator.
  (global $heap (mut i32) (i32.const 2048))
  ;; One past the last byte of the JSON being read.
  (global $end (mut i32) (i32.const 0))
  ;; Where the output starts, and the next byte to write.
  (global $out_start (mut i32) (i32.const 0))
  (global $out (mut i32) (i32.const 0))
  ;; What the current evaluation knows: the kind and name for messages (content as written),
  ;; the denied_registries value (-1 if none), and how many violations were written.
  (global $kind (mut i32) (i32.const 0))
  (global $kind_len (mut i32) (i32.const 0))
  (global $name (mut i32) (i32.const 0))
  (global $name_len (mut i32) (i32.const 0))
  (global $denied (mut i32) (i32.const -1))
  (global $violations (mut i32) (i32.const 0))

  ;; Makes sure memory reaches `limit` (exclusive), growing it; traps if the host refuses.
  (func $reserve (param $limit i32)
    (local $have i32)
    (local.set $have (i32.mul (memory.size) (i32.const 65536)))
    (if (i32.gt_u (local.get $limit) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow
                (i32.shr_u
                  (i32.add (i32.sub (local.get $limit) (local.get $have)) (i32.const 65535))
                  (i32.const 16)))
              (i32.const -1))
          (then unreachable)))))

  ;; ABI v1: room for the host's input. Never freed.
  (func (export "allocate") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (global.set $heap (i32.add (local.get $p) (local.get $len)))
    (call $reserve (global.get $heap))
    (local.get $p))

  ;; --- output ------------------------------------------------------------------------------

  (func $emit (param $p i32) (param $len i32)
    (call $reserve (i32.add (global.get $out) (local.get $len)))
    (memory.copy (global.get $out) (local.get $p) (local.get $len))
    (global.set $out (i32.add (global.get $out) (local.get $len))))

  ;; Writes a length-prefixed constant.
  (func $emit_const (param $c i32)
    (call $emit (i32.add (local.get $c) (i32.const 1)) (i32.load8_u (local.get $c))))

  (func $begin_output
    (global.set $out_start (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (global.set $out (global.get $out_start)))

  ;; The packed (pointer << 32 | length) of everything written since $begin_output.
  (func $packed (result i64)
    (i64.or
      (i64.shl (i64.extend_i32_u (global.get $out_start)) (i64.const 32))
      (i64.extend_i32_u (i32.sub (global.get $out) (global.get $out_start)))))

  ;; --- reading JSON ------------------------------------------------------------------------

  (func $byte (param $p i32) (result i32)
    (if (result i32) (i32.lt_u (local.get $p) (global.get $end))
      (then (i32.load8_u (local.get $p)))
      (else (i32.const -1))))

  (func $ws (param $p i32) (result i32)
    (local $c i32)
    (block $done
      (loop $next
        (local.set $c (call $byte (local.get $p)))
        (br_if $done
          (i32.eqz
            (i32.or
              (i32.or (i32.eq (local.get $c) (i32.const 32)) (i32.eq (local.get $c) (i32.const 9)))
              (i32.or (i32.eq (local.get $c) (i32.const 10)) (i32.eq (local.get $c) (i32.const 13))))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (local.get $p))

  ;; $p at an opening quote: the position after the closing quote, or -1.
  (func $skip_string (param $p i32) (result i32)
    (local $c i32)
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (loop $next
      (if (i32.ge_u (local.get $p) (global.get $end)) (then (return (i32.const -1))))
      (local.set $c (i32.load8_u (local.get $p)))
      (if (i32.eq (local.get $c) (i32.const 34)) (then (return (i32.add (local.get $p) (i32.const 1)))))
      (if (i32.lt_u (local.get $c) (i32.const 32)) (then (return (i32.const -1))))
      (local.set $p
        (i32.add (local.get $p) (select (i32.const 2) (i32.const 1) (i32.eq (local.get $c) (i32.const 92)))))
      (br $next))
    (i32.const -1))

  ;; Whether the bytes at $p..$p+$len equal the constant $c.
  (func $equals (param $p i32) (param $len i32) (param $c i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $len) (i32.load8_u (local.get $c))) (then (return (i32.const 0))))
    (block $differs
      (loop $next
        (br_if $differs (i32.ge_u (local.get $i) (local.get $len)))
        (if (i32.ne
              (i32.load8_u (i32.add (local.get $p) (local.get $i)))
              (i32.load8_u (i32.add (i32.add (local.get $c) (i32.const 1)) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 1))

  ;; Whether the bytes at $a..$a+$len equal those at $b..$b+$len.
  (func $same (param $a i32) (param $b i32) (param $len i32) (result i32)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (if (i32.ne
              (i32.load8_u (i32.add (local.get $a) (local.get $i)))
              (i32.load8_u (i32.add (local.get $b) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 1))

  ;; Whether the literal constant $c is written at $p (within the input).
  (func $literal (param $p i32) (param $c i32) (result i32)
    (if (i32.gt_u
          (i32.add (local.get $p) (i32.load8_u (local.get $c)))
          (global.get $end))
      (then (return (i32.const 0))))
    (call $equals (local.get $p) (i32.load8_u (local.get $c)) (local.get $c)))

  ;; $p at the first byte of a value: the position after it, or -1 if it is not well formed.
  (func $skip_value (param $p i32) (param $depth i32) (result i32)
    (local $c i32)
    (local $close i32)
    (local.set $c (call $byte (local.get $p)))
    (if (i32.eq (local.get $c) (i32.const 34)) (then (return (call $skip_string (local.get $p)))))
    (if (i32.or (i32.eq (local.get $c) (i32.const 123)) (i32.eq (local.get $c) (i32.const 91)))
      (then
        (if (i32.ge_u (local.get $depth) (i32.const 128)) (then (return (i32.const -1))))
        ;; '}' is '{' + 2, and ']' is '[' + 2.
        (local.set $close (i32.add (local.get $c) (i32.const 2)))
        (local.set $p (call $ws (i32.add (local.get $p) (i32.const 1))))
        (if (i32.eq (call $byte (local.get $p)) (local.get $close))
          (then (return (i32.add (local.get $p) (i32.const 1)))))
        (loop $member
          (if (i32.eq (local.get $c) (i32.const 123))
            (then
              (if (i32.ne (call $byte (local.get $p)) (i32.const 34)) (then (return (i32.const -1))))
              (local.set $p (call $skip_string (local.get $p)))
              (if (i32.lt_s (local.get $p) (i32.const 0)) (then (return (i32.const -1))))
              (local.set $p (call $ws (local.get $p)))
              (if (i32.ne (call $byte (local.get $p)) (i32.const 58)) (then (return (i32.const -1))))
              (local.set $p (call $ws (i32.add (local.get $p) (i32.const 1))))))
          (local.set $p (call $skip_value (local.get $p) (i32.add (local.get $depth) (i32.const 1))))
          (if (i32.lt_s (local.get $p) (i32.const 0)) (then (return (i32.const -1))))
          (local.set $p (call $ws (local.get $p)))
          (if (i32.eq (call $byte (local.get $p)) (i32.const 44))
            (then
              (local.set $p (call $ws (i32.add (local.get $p) (i32.const 1))))
              (br $member)))
          (if (i32.eq (call $byte (local.get $p)) (local.get $close))
            (then (return (i32.add (local.get $p) (i32.const 1))))))
        (return (i32.const -1))))
    (if (i32.eq (local.get $c) (i32.const 116))
      (then (return (select (i32.add (local.get $p) (i32.const 4)) (i32.const -1)
                            (call $literal (local.get $p) (i32.const 736))))))
    (if (i32.eq (local.get $c) (i32.const 102))
      (then (return (select (i32.add (local.get $p) (i32.const 5)) (i32.const -1)
                            (call $literal (local.get $p) (i32.const 768))))))
    (if (i32.eq (local.get $c) (i32.const 110))
      (then (return (select (i32.add (local.get $p) (i32.const 4)) (i32.const -1)
                            (call $literal (local.get $p) (i32.const 800))))))
    ;; A number: '-' or a digit, then digits, '.', 'e', 'E', '+', '-'.
    (if (i32.eqz
          (i32.or (i32.eq (local.get $c) (i32.const 45))
                  (i32.lt_u (i32.sub (local.get $c) (i32.const 48)) (i32.const 10))))
      (then (return (i32.const -1))))
    (block $done
      (loop $digit
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (local.set $c (call $byte (local.get $p)))
        (br_if $digit (i32.lt_u (i32.sub (local.get $c) (i32.const 48)) (i32.const 10)))
        (br_if $digit (i32.eq (local.get $c) (i32.const 46)))
        (br_if $digit (i32.eq (i32.or (local.get $c) (i32.const 32)) (i32.const 101)))
        (br_if $digit (i32.eq (local.get $c) (i32.const 43)))
        (br_if $digit (i32.eq (local.get $c) (i32.const 45)))))
    (local.get $p))

  ;; Checks that $start..$end holds one well-formed value and nothing else: its position, or -1.
  (func $parse (param $start i32) (param $len i32) (result i32)
    (local $root i32)
    (local $after i32)
    (global.set $end (i32.add (local.get $start) (local.get $len)))
    (local.set $root (call $ws (local.get $start)))
    (local.set $after (call $skip_value (local.get $root) (i32.const 0)))
    (if (i32.lt_s (local.get $after) (i32.const 0)) (then (return (i32.const -1))))
    (if (i32.ne (call $ws (local.get $after)) (global.get $end)) (then (return (i32.const -1))))
    (local.get $root))

  ;; The following assume the input passed $parse.

  (func $is_string (param $v i32) (result i32)
    (if (result i32) (i32.lt_s (local.get $v) (i32.const 0))
      (then (i32.const 0))
      (else (i32.eq (i32.load8_u (local.get $v)) (i32.const 34)))))

  (func $is (param $v i32) (param $opening i32) (result i32)
    (if (result i32) (i32.lt_s (local.get $v) (i32.const 0))
      (then (i32.const 0))
      (else (i32.eq (i32.load8_u (local.get $v)) (local.get $opening)))))

  ;; The length of a string value's content (between its quotes, as written).
  (func $string_len (param $v i32) (result i32)
    (i32.sub (i32.sub (call $skip_string (local.get $v)) (local.get $v)) (i32.const 2)))

  ;; The value of member $key (a constant) in the object at $obj, or -1 (also when $obj is not
  ;; an object). The last of duplicate members wins.
  (func $get (param $obj i32) (param $key i32) (result i32)
    (local $p i32)
    (local $after_key i32)
    (local $found i32)
    (local.set $found (i32.const -1))
    (if (i32.eqz (call $is (local.get $obj) (i32.const 123))) (then (return (i32.const -1))))
    (local.set $p (call $ws (i32.add (local.get $obj) (i32.const 1))))
    (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 125)) (then (return (i32.const -1))))
    (loop $member
      (local.set $after_key (call $skip_string (local.get $p)))
      (if (call $equals
            (i32.add (local.get $p) (i32.const 1))
            (i32.sub (i32.sub (local.get $after_key) (local.get $p)) (i32.const 2))
            (local.get $key))
        (then
          (local.set $p (call $ws (i32.add (call $ws (local.get $after_key)) (i32.const 1))))
          (local.set $found (local.get $p)))
        (else
          (local.set $p (call $ws (i32.add (call $ws (local.get $after_key)) (i32.const 1))))))
      (local.set $p (call $ws (call $skip_value (local.get $p) (i32.const 0))))
      (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 44))
        (then
          (local.set $p (call $ws (i32.add (local.get $p) (i32.const 1))))
          (br $member))))
    (local.get $found))

  ;; The first element of the array at $arr, or -1 when it is empty or not an array.
  (func $first (param $arr i32) (result i32)
    (local $p i32)
    (if (i32.eqz (call $is (local.get $arr) (i32.const 91))) (then (return (i32.const -1))))
    (local.set $p (call $ws (i32.add (local.get $arr) (i32.const 1))))
    (if (result i32) (i32.eq (i32.load8_u (local.get $p)) (i32.const 93))
      (then (i32.const -1))
      (else (local.get $p))))

  ;; The element after the one at $el, or -1 at the end of the array.
  (func $next (param $el i32) (result i32)
    (local $p i32)
    (local.set $p (call $ws (call $skip_value (local.get $el) (i32.const 0))))
    (if (result i32) (i32.eq (i32.load8_u (local.get $p)) (i32.const 44))
      (then (call $ws (i32.add (local.get $p) (i32.const 1))))
      (else (i32.const -1))))

  ;; --- the policy --------------------------------------------------------------------------

  ;; Starts the next violation: the response's head before the first, "; " before the others.
  (func $violation
    (if (global.get $violations)
      (then (call $emit_const (i32.const 1152)))
      (else (call $emit_const (i32.const 864))))
    (global.set $violations (i32.add (global.get $violations) (i32.const 1)))
    ;; "<Kind> <name>"
    (call $emit (global.get $kind) (global.get $kind_len))
    (call $reserve (i32.add (global.get $out) (i32.const 1)))
    (i32.store8 (global.get $out) (i32.const 32))
    (global.set $out (i32.add (global.get $out) (i32.const 1)))
    (call $emit (global.get $name) (global.get $name_len)))

  ;; Whether the registry $reg..$reg+$len is listed in denied_registries.
  (func $denied (param $reg i32) (param $len i32) (result i32)
    (local $el i32)
    (local.set $el (call $first (global.get $denied)))
    (block $done
      (loop $each
        (br_if $done (i32.lt_s (local.get $el) (i32.const 0)))
        (if (call $is_string (local.get $el))
          (then
            (if (i32.and
                  (i32.eq (call $string_len (local.get $el)) (local.get $len))
                  (call $same (i32.add (local.get $el) (i32.const 1)) (local.get $reg) (local.get $len)))
              (then (return (i32.const 1))))))
        (local.set $el (call $next (local.get $el)))
        (br $each)))
    (i32.const 0))

  ;; Judges one container (an element of containers or initContainers).
  (func $container (param $c i32) (param $init i32)
    (local $image i32)
    (local $s i32)
    (local $e i32)
    (local $i i32)
    (local $b i32)
    (local $slash i32)
    (local $host i32)
    (local $reg i32)
    (local $reg_len i32)
    (local $name i32)
    (local.set $image (call $get (local.get $c) (i32.const 384)))
    (if (i32.eqz (call $is_string (local.get $image))) (then (return)))
    (local.set $s (i32.add (local.get $image) (i32.const 1)))
    (local.set $e (i32.add (local.get $s) (call $string_len (local.get $image))))
    ;; The first '/' (an escaped byte is never one) ...
    (local.set $slash (i32.const -1))
    (local.set $i (local.get $s))
    (block $found
      (loop $scan
        (br_if $found (i32.ge_u (local.get $i) (local.get $e)))
        (local.set $b (i32.load8_u (local.get $i)))
        (if (i32.eq (local.get $b) (i32.const 47))
          (then (local.set $slash (local.get $i)) (br $found)))
        (local.set $i
          (i32.add (local.get $i) (select (i32.const 2) (i32.const 1) (i32.eq (local.get $b) (i32.const 92)))))
        (br $scan)))
    ;; ... ends a registry host if what precedes it has a '.' or ':' or is "localhost".
    (if (i32.ge_s (local.get $slash) (i32.const 0))
      (then
        (local.set $host
          (call $equals (local.get $s) (i32.sub (local.get $slash) (local.get $s)) (i32.const 480)))
        (local.set $i (local.get $s))
        (block $checked
          (loop $scan
            (br_if $checked (i32.ge_u (local.get $i) (local.get $slash)))
            (local.set $b (i32.load8_u (local.get $i)))
            (if (i32.or (i32.eq (local.get $b) (i32.const 46)) (i32.eq (local.get $b) (i32.const 58)))
              (then (local.set $host (i32.const 1))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $scan)))))
    (if (local.get $host)
      (then
        (local.set $reg (local.get $s))
        (local.set $reg_len (i32.sub (local.get $slash) (local.get $s))))
      (else
        (local.set $reg (i32.const 449))
        (local.set $reg_len (i32.const 9))))
    (if (i32.eqz (call $denied (local.get $reg) (local.get $reg_len))) (then (return)))
    ;; <Kind> <name>, [init ]container "<name>": image "<image>" is from denied registry "<reg>"
    (call $violation)
    (call $emit_const (select (i32.const 1008) (i32.const 976) (local.get $init)))
    (local.set $name (call $get (local.get $c) (i32.const 160)))
    (if (call $is_string (local.get $name))
      (then (call $emit (i32.add (local.get $name) (i32.const 1)) (call $string_len (local.get $name)))))
    (call $emit_const (i32.const 1040))
    (call $emit (local.get $s) (i32.sub (local.get $e) (local.get $s)))
    (call $emit_const (i32.const 1072))
    (call $emit (local.get $reg) (local.get $reg_len))
    (call $emit_const (i32.const 1120)))

  (func $containers (param $list i32) (param $init i32)
    (local $el i32)
    (local.set $el (call $first (local.get $list)))
    (block $done
      (loop $each
        (br_if $done (i32.lt_s (local.get $el) (i32.const 0)))
        (call $container (local.get $el) (local.get $init))
        (local.set $el (call $next (local.get $el)))
        (br $each))))

  ;; ABI v1: judges {"request": ..., "settings": ...}.
  (func (export "validate") (param $ptr i32) (param $len i32) (result i64)
    (local $root i32)
    (local $request i32)
    (local $kind i32)
    (local $object i32)
    (local $metadata i32)
    (local $name i32)
    (local $team i32)
    (local $pod i32)
    (local $spec i32)
    (call $begin_output)
    (global.set $violations (i32.const 0))
    (local.set $root (call $parse (local.get $ptr) (local.get $len)))
    (if (i32.eqz (call $is (local.get $root) (i32.const 123)))
      (then
        (call $emit_const (i32.const 1184))
        (return (call $packed))))
    (local.set $request (call $get (local.get $root) (i32.const 0)))
    (global.set $denied (call $get (call $get (local.get $root) (i32.const 32)) (i32.const 416)))
    (local.set $kind (call $get (call $get (local.get $request) (i32.const 64)) (i32.const 64)))
    (local.set $object (call $get (local.get $request) (i32.const 96)))
    (block $judged
      (br_if $judged (i32.eqz (call $is (local.get $object) (i32.const 123))))
      (br_if $judged (i32.eqz (call $is_string (local.get $kind))))
      (global.set $kind (i32.add (local.get $kind) (i32.const 1)))
      (global.set $kind_len (call $string_len (local.get $kind)))
      (local.set $pod (call $equals (global.get $kind) (global.get $kind_len) (i32.const 512)))
      (br_if $judged
        (i32.eqz
          (i32.or
            (i32.or
              (i32.or (local.get $pod)
                      (call $equals (global.get $kind) (global.get $kind_len) (i32.const 544)))
              (i32.or (call $equals (global.get $kind) (global.get $kind_len) (i32.const 576))
                      (call $equals (global.get $kind) (global.get $kind_len) (i32.const 608))))
            (i32.or (call $equals (global.get $kind) (global.get $kind_len) (i32.const 640))
                    (call $equals (global.get $kind) (global.get $kind_len) (i32.const 672))))))
      (local.set $metadata (call $get (local.get $object) (i32.const 128)))
      (local.set $name (call $get (local.get $metadata) (i32.const 160)))
      (if (call $is_string (local.get $name))
        (then
          (global.set $name (i32.add (local.get $name) (i32.const 1)))
          (global.set $name_len (call $string_len (local.get $name))))
        (else
          (global.set $name (i32.const 705))
          (global.set $name_len (i32.const 9))))
      ;; The label: a non-empty string.
      (local.set $team (call $get (call $get (local.get $metadata) (i32.const 192)) (i32.const 224)))
      (if (i32.eqz
            (i32.and (call $is_string (local.get $team))
                     (i32.ne (i32.load8_u (i32.add (local.get $team) (i32.const 1))) (i32.const 34))))
        (then
          (call $violation)
          (call $emit_const (i32.const 928))))
      ;; The pod spec: spec for a Pod, spec.template.spec for the others.
      (local.set $spec (call $get (local.get $object) (i32.const 256)))
      (if (i32.eqz (local.get $pod))
        (then
          (local.set $spec
            (call $get (call $get (local.get $spec) (i32.const 288)) (i32.const 256)))))
      (call $containers (call $get (local.get $spec) (i32.const 320)) (i32.const 0))
      (call $containers (call $get (local.get $spec) (i32.const 352)) (i32.const 1)))
    (if (global.get $violations)
      (then (call $emit_const (i32.const 896)))
      (else (call $emit_const (i32.const 832))))
    (call $packed))

  ;; Writes {"valid":false,"message":"<constant $c>...: the caller appends and closes.
  (func $invalid (param $c i32)
    (call $emit_const (i32.const 1312))
    (call $emit_const (local.get $c)))

  ;; ABI v1: checks the settings document: null, or an object whose only key is
  ;; denied_registries, a list of registry hosts (non-empty, no '/').
  (func (export "validate_settings") (param $ptr i32) (param $len i32) (result i64)
    (local $root i32)
    (local $p i32)
    (local $after_key i32)
    (local $value i32)
    (local $el i32)
    (local $s i32)
    (local $n i32)
    (local $i i32)
    (call $begin_output)
    (local.set $root (call $parse (local.get $ptr) (local.get $len)))
    (block $valid
      (if (i32.lt_s (local.get $root) (i32.const 0))
        (then (call $invalid (i32.const 1344)) (call $emit_const (i32.const 896)) (return (call $packed))))
      (br_if $valid (call $literal (local.get $root) (i32.const 800)))
      (if (i32.eqz (call $is (local.get $root) (i32.const 123)))
        (then (call $invalid (i32.const 1376)) (call $emit_const (i32.const 896)) (return (call $packed))))
      (local.set $p (call $ws (i32.add (local.get $root) (i32.const 1))))
      (br_if $valid (i32.eq (i32.load8_u (local.get $p)) (i32.const 125)))
      (loop $member
        (local.set $after_key (call $skip_string (local.get $p)))
        (local.set $value (call $ws (i32.add (call $ws (local.get $after_key)) (i32.const 1))))
        (if (i32.eqz
              (call $equals
                (i32.add (local.get $p) (i32.const 1))
                (i32.sub (i32.sub (local.get $after_key) (local.get $p)) (i32.const 2))
                (i32.const 416)))
          (then
            (call $invalid (i32.const 1456))
            (call $emit
              (i32.add (local.get $p) (i32.const 1))
              (i32.sub (i32.sub (local.get $after_key) (local.get $p)) (i32.const 2)))
            (call $emit_const (i32.const 1120))
            (call $emit_const (i32.const 896))
            (return (call $packed))))
        (if (i32.eqz (call $is (local.get $value) (i32.const 91)))
          (then (call $invalid (i32.const 1408)) (call $emit_const (i32.const 896)) (return (call $packed))))
        (local.set $el (call $first (local.get $value)))
        (block $elements
          (loop $each
            (br_if $elements (i32.lt_s (local.get $el) (i32.const 0)))
            (if (i32.eqz (call $is_string (local.get $el)))
              (then (call $invalid (i32.const 1408)) (call $emit_const (i32.const 896)) (return (call $packed))))
            (local.set $s (i32.add (local.get $el) (i32.const 1)))
            (local.set $n (call $string_len (local.get $el)))
            ;; A host is non-empty and has no '/'.
            (local.set $i (i32.const 0))
            (block $checked
              (loop $scan
                (br_if $checked (i32.ge_u (local.get $i) (local.get $n)))
                (br_if $checked (i32.eq (i32.load8_u (i32.add (local.get $s) (local.get $i))) (i32.const 47)))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br $scan)))
            (if (i32.or (i32.eqz (local.get $n)) (i32.lt_u (local.get $i) (local.get $n)))
              (then
                (call $invalid (i32.const 1488))
                (call $emit (local.get $s) (local.get $n))
                (call $emit_const (i32.const 1520))
                (call $emit_const (i32.const 896))
                (return (call $packed))))
            (local.set $el (call $next (local.get $el)))
            (br $each)))
        (local.set $p (call $ws (call $skip_value (local.get $value) (i32.const 0))))
        (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 44))
          (then
            (local.set $p (call $ws (i32.add (local.get $p) (i32.const 1))))
            (br $member)))))
    (call $emit_const (i32.const 1280))
    (call $packed)))
