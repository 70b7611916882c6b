//! The WASI preview 1 functions a policy can import: wasmtime-wasi's async implementation, with
//! the socket calls replaced by ones that refuse just as quietly as every other missing
//! capability.
//!
//! wasmtime-wasi answers `sock_accept`, `sock_recv`, `sock_send` and `sock_shutdown` with an
//! error, but first logs a warning for every call, into the webhook's own log. A guest calling
//! one in a loop wrote 4,245 warning lines (960 KB) in a single 100 ms evaluation. The
//! replacements give the same answers without a word: a policy has no sockets, and its only
//! descriptors are stdin, stdout and stderr (no directory is preopened, so nothing can be
//! opened), so descriptors 0 to 2 are not sockets and any other is not a descriptor at all.

use wasmtime::Linker;

use super::EngineError;
use super::compiled::HostState;

/// WASI's "bad file descriptor".
const EBADF: i32 = 8;
/// WASI's "not a socket".
const ENOTSOCK: i32 = 57;

/// Adds WASI preview 1 to `linker`. Every host call is async or returns at once, never blocking
/// the thread: see [`super::deadline`].
pub(crate) fn link(linker: &mut Linker<HostState>) -> Result<(), EngineError> {
    let wasi = |e: wasmtime::Error| EngineError::Wasi(format!("{e:#}"));
    // The async linker, never the sync one: its host calls are futures the deadline can
    // cancel, where the sync ones block the thread inside `block_on`.
    wasmtime_wasi::p1::add_to_linker_async(linker, |s: &mut HostState| &mut s.wasi).map_err(wasi)?;
    linker.allow_shadowing(true);
    let module = "wasi_snapshot_preview1";
    linker
        .func_wrap(module, "sock_accept", |fd: i32, _flags: i32, _fd_out: i32| {
            refuse(fd)
        })
        .and_then(|l| {
            l.func_wrap(
                module,
                "sock_recv",
                |fd: i32, _data: i32, _data_len: i32, _flags: i32, _len_out: i32, _flags_out: i32| refuse(fd),
            )
        })
        .and_then(|l| {
            l.func_wrap(
                module,
                "sock_send",
                |fd: i32, _data: i32, _data_len: i32, _flags: i32, _len_out: i32| refuse(fd),
            )
        })
        .and_then(|l| l.func_wrap(module, "sock_shutdown", |fd: i32, _how: i32| refuse(fd)))
        .map_err(wasi)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The errno for a socket call on `fd`.
fn refuse(fd: i32) -> i32 {
    if (0..=2).contains(&fd) { ENOTSOCK } else { EBADF }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use crate::engine::limits::Limits;
    use crate::engine::{CallError, Export, test_module};

    /// A log sink the test can read back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn socket_calls_in_a_loop_log_nothing() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .finish();
        let imports = r#"(import "wasi_snapshot_preview1" "sock_accept"
                            (func $sock_accept (param i32 i32 i32) (result i32)))"#;
        let body = "(loop $again
                      (drop (call $sock_accept (i32.const 3) (i32.const 0) (i32.const 0)))
                      (br $again))";
        let looper = test_module(imports, body).expect("compiles");
        let limits = Limits {
            timeout: Duration::from_millis(100),
            memory_bytes: 1 << 20,
        };
        let result = tracing::subscriber::with_default(subscriber, || {
            looper.call(Export::Validate, b"{}", limits).map(|out| out.bytes)
        });
        assert_eq!(result, Err(CallError::Timeout(Duration::from_millis(100))));
        let logged = sink.0.lock().expect("sink").clone();
        let text = String::from_utf8_lossy(&logged);
        assert!(
            text.is_empty(),
            "{} lines logged, the first: {:?}",
            text.lines().count(),
            text.lines().next()
        );
    }
}
