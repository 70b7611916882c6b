//! The deadline of one call, and what makes it hold wherever the guest spends its time.
//!
//! A guest spends time in two places: in its own Wasm code, and in host calls (WASI clocks and
//! polls, stdio, any capability added later). Two mechanisms bound the two, and both report the
//! same [`CallError::Timeout`]:
//!
//! - **Wasm code**: the [`EpochTicker`] advances the engine's epoch every [`TICK`], and a Store
//!   whose epoch deadline has passed traps with `Trap::Interrupt` at the next function entry or
//!   loop back-edge. An epoch is only checked in Wasm code, so on its own it would let a guest
//!   asleep in `poll_oneoff` sleep for as long as it asked.
//! - **Host calls**: every host function is async (the WASI linker is wasmtime-wasi's async
//!   one), and every call runs as one future under a timer of the policy's timeout. When the
//!   timer fires first, the future is dropped: whatever the host was awaiting is cancelled and
//!   the guest's fiber is unwound. This is structural: a host call can only outlast the deadline
//!   by computing without awaiting, never by waiting.
//!
//! Callers stay blocking. [`Timers::run`] polls the call on the calling thread, so on the
//! normal path, where no host call ever waits, there is no thread hop and no timer to register
//! (tokio registers a timeout only once the future it guards has returned `Pending`). Timers
//! that are registered are driven by a thread of their own, which keeps `run` usable from any
//! thread: a blocking-pool thread, `main` before the server's runtime starts, or a test.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use wasmtime::{Store, UpdateDeadline};

use super::EngineError;
use super::compiled::CallError;
use super::limits::{Limits, TICK};

/// Gives `store` the epoch deadline of `limits`, whatever the transport: Wasm code in it traps
/// with `Trap::Interrupt` once `limits.timeout` has passed.
pub(crate) fn arm<T: 'static>(store: &mut Store<T>, limits: Limits) {
    store.set_epoch_deadline(limits.deadline_ticks());
    // The epoch ticker catches up in a burst after the machine delayed it, so a call that
    // started while it lagged would reach its epoch deadline early: when that happens before
    // the wall-clock end, the deadline is moved to it instead of interrupting.
    let ends = Instant::now() + limits.timeout;
    store.epoch_deadline_callback(move |_| {
        let left = ends.saturating_duration_since(Instant::now());
        Ok(if left.is_zero() {
            UpdateDeadline::Interrupt
        } else {
            // Whole ticks to the end, not one more: being late is what this avoids.
            UpdateDeadline::Continue(
                u64::try_from(left.as_micros().div_ceil(TICK.as_micros()))
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
        })
    });
}

/// Advances the engine's epoch once per [`TICK`] of elapsed time on a thread of its own, until
/// dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Fails rather than run without a ticker: without it no deadline would fire in Wasm code.
    pub(crate) fn start(engine: wasmtime::Engine) -> Result<Arc<Self>, EngineError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("portcullis-epoch".into())
            .spawn(move || {
                let started = Instant::now();
                let mut ticks: u128 = 0;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    // Count ticks of elapsed time, not wake-ups: on a busy machine the thread
                    // wakes late, and a deadline counted in wake-ups stretches with it (with six
                    // spinning threads on two cores, 100 ms became 325-470 ms). Catching up
                    // keeps deadlines in real time (109-144 ms there).
                    let due = started.elapsed().as_micros() / TICK.as_micros();
                    while ticks < due {
                        engine.increment_epoch();
                        ticks += 1;
                    }
                }
            })
            .map_err(|e| EngineError::Thread("epoch ticker", e))?;
        Ok(Arc::new(Self { stop }))
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The timers of host calls: a current-thread tokio runtime with only its time driver, run by
/// a thread of its own until dropped.
pub(crate) struct Timers {
    handle: tokio::runtime::Handle,
    /// Dropping it ends the thread's `block_on`, which drops the runtime on that thread.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Timers {
    /// Fails rather than run without timers: without them a host call could wait forever.
    pub(crate) fn start() -> Result<Arc<Self>, EngineError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(EngineError::Timers)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("portcullis-timers".into())
            .spawn(move || {
                // Err means the sender was dropped: the engine is gone.
                let _ = runtime.block_on(stopped);
            })
            .map_err(|e| EngineError::Thread("host-call timers", e))?;
        Ok(Arc::new(Self { handle, _stop: stop }))
    }

    /// Runs `call` to completion on the calling thread, blocking it, or until `timeout` has
    /// passed, whichever comes first. A call cut short is dropped where it stands and reported
    /// as [`CallError::Timeout`].
    pub(crate) fn run<T>(
        &self,
        timeout: Duration,
        call: impl Future<Output = Result<T, CallError>>,
    ) -> Result<T, CallError> {
        // Host futures (WASI's sleeps, this timeout) find the time driver through the context.
        let _context = self.handle.enter();
        block_on(async {
            tokio::time::timeout(timeout, call)
                .await
                .unwrap_or(Err(CallError::Timeout(timeout)))
        })
    }
}

/// Polls `future` on this thread, parking between wake-ups. Unlike a tokio `block_on` it may be
/// called on any thread, inside a runtime or not: the thread is simply blocked, as the
/// engine's callers expect.
fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        // Spurious returns are harmless: the loop polls again.
        std::thread::park();
    }
}

/// Wakes a parked [`block_on`].
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::limits::Limits;
    use crate::engine::{CompiledModule, Export, test_engine, test_module};

    /// How late a timeout may answer: one epoch tick, the timer's millisecond rounding, and a
    /// loaded two-core machine's scheduling.
    const SLACK: Duration = Duration::from_millis(100);

    fn module(wat: &str) -> CompiledModule {
        let wasm = wat::parse_str(wat).expect("valid WAT");
        test_engine().compile(&wasm).expect("compiles")
    }

    fn limits(timeout_ms: u64) -> Limits {
        Limits {
            timeout: Duration::from_millis(timeout_ms),
            memory_bytes: 16 << 20,
        }
    }

    /// Calls `module` under a `timeout_ms` deadline; returns the result and how long it took.
    fn timed(module: &CompiledModule, timeout_ms: u64) -> (Result<Vec<u8>, CallError>, Duration) {
        let started = Instant::now();
        let result = module
            .call(Export::Validate, b"{}", limits(timeout_ms))
            .map(|out| out.bytes);
        (result, started.elapsed())
    }

    /// Asserts a timeout no earlier than the deadline and no later than [`SLACK`] after it.
    fn assert_times_out(module: &CompiledModule, what: &str) -> Duration {
        let (result, elapsed) = timed(module, 100);
        assert_eq!(
            result.map(|b| String::from_utf8_lossy(&b).into_owned()),
            Err(CallError::Timeout(Duration::from_millis(100))),
            "{what}"
        );
        assert!(
            elapsed >= Duration::from_millis(100) && elapsed < Duration::from_millis(100) + SLACK,
            "{what}: answered after {elapsed:?}"
        );
        elapsed
    }

    /// A module that runs `body` (which may call `$poll_oneoff`), then accepts.
    fn poller(body: &str) -> CompiledModule {
        let import = r#"(import "wasi_snapshot_preview1" "poll_oneoff"
                           (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))"#;
        test_module(import, body).expect("compiles")
    }

    /// Writes one clock subscription at 256: `clock` id, `timeout` ns, `flags` (1 = absolute).
    fn subscribe(clock: u32, timeout: &str, flags: u32) -> String {
        format!(
            "(i32.store8 (i32.const 264) (i32.const 0))
             (i32.store (i32.const 272) (i32.const {clock}))
             (i64.store (i32.const 280) {timeout})
             (i32.store16 (i32.const 296) (i32.const {flags}))"
        )
    }

    const POLL_ONE: &str =
        "(drop (call $poll_oneoff (i32.const 256) (i32.const 512) (i32.const 1) (i32.const 600)))";

    #[test]
    fn a_relative_sleep_in_poll_oneoff_times_out_at_the_deadline() {
        // What Rust's std::thread::sleep does on wasip1.
        let sleeper = module(include_str!("../../tests/fixtures/sleep.wat"));
        let elapsed = assert_times_out(&sleeper, "10 s relative sleep");
        eprintln!("10 s relative sleep, 100 ms deadline: answered after {elapsed:?}");
    }

    #[test]
    fn an_absolute_sleep_until_the_far_future_times_out_at_the_deadline() {
        let body = format!("{} {POLL_ONE}", subscribe(0, "(i64.const 0x7fffffffffffffff)", 1));
        assert_times_out(&poller(&body), "realtime absolute sleep");
        let body = format!("{} {POLL_ONE}", subscribe(1, "(i64.const 0x7fffffffffffffff)", 1));
        assert_times_out(&poller(&body), "monotonic absolute sleep");
    }

    #[test]
    fn short_sleeps_in_a_loop_time_out_at_the_deadline() {
        // Alternates between Wasm and the host: whichever holds the guest at the deadline ends it.
        let body = format!(
            "(loop $again {} {POLL_ONE} (br $again))",
            subscribe(1, "(i64.const 1000000)", 0)
        );
        assert_times_out(&poller(&body), "1 ms sleeps forever");
    }

    #[test]
    fn a_sleep_within_the_deadline_completes() {
        let body = format!("{} {POLL_ONE}", subscribe(1, "(i64.const 20000000)", 0));
        let (result, elapsed) = timed(&poller(&body), 1000);
        assert_eq!(result.as_deref(), Ok(&br#"{"accepted":true}"#[..]));
        assert!(elapsed >= Duration::from_millis(20), "woke early: {elapsed:?}");
    }

    #[test]
    fn a_busy_machine_does_not_stretch_the_deadline() {
        // Two spinning threads per core compete with the epoch ticker for the whole test.
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let spinners: Vec<_> = (0..2 * cores)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        let looper = test_module("", "(loop $forever (br $forever))").expect("compiles");
        let elapsed: Vec<Duration> = (0..3)
            .map(|_| assert_times_out(&looper, "an infinite loop beside spinning threads"))
            .collect();
        stop.store(true, Ordering::Relaxed);
        for spinner in spinners {
            spinner.join().expect("spinner");
        }
        eprintln!(
            "infinite loop, 100 ms deadline, {} spinning threads: {elapsed:?}",
            2 * cores
        );
    }

    #[test]
    fn calls_work_from_inside_an_async_context_too() {
        // A blocking call on an async worker is a mistake, but it must not panic or hang.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let sleeper = module(include_str!("../../tests/fixtures/sleep.wat"));
        let result = runtime.block_on(async { timed(&sleeper, 100).0 });
        assert_eq!(result, Err(CallError::Timeout(Duration::from_millis(100))));
    }
}
