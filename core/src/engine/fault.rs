//! Injected engine failures, for tests of what happens when the engine dies (`test-util`
//! builds only): armed process-wide, raised by the next engine step that has work, so a test
//! can serve real requests first and then fail the engine in the middle of one.

use std::sync::Mutex;

/// How the engine thread fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The engine thread panics.
    Panic,
    /// The engine thread stops making progress (a hung decode).
    Hang,
    /// llama.cpp aborts, through ggml's real `ggml_abort`.
    Abort,
}

static ARMED: Mutex<Option<Fault>> = Mutex::new(None);

/// Arms `fault`: the next engine step with work in this process raises it (once).
pub fn arm(fault: Fault) {
    *ARMED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fault);
}

/// Raises the armed fault, if any, on the calling engine thread.
pub(crate) fn raise_armed() {
    let armed = ARMED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    match armed {
        None => {}
        Some(Fault::Panic) => panic!("injected engine fault: panic"),
        Some(Fault::Hang) => loop {
            std::thread::park();
        },
        // SAFETY: ggml_abort is variadic (printf-style); the format "%s" takes the one C string
        // passed. It does not return: the abort callback parks this thread, or the process aborts.
        Some(Fault::Abort) => unsafe {
            llama_cpp_sys_2::ggml_abort(
                c"cada-fault".as_ptr(),
                0,
                c"%s".as_ptr(),
                c"injected engine fault: abort".as_ptr(),
            );
        },
    }
}
