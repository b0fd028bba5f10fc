//! The process-wide llama.cpp backend: llama.cpp may be initialised only once per process,
//! so every engine (and every test) shares this one, with llama.cpp's logs routed to `tracing`
//! and its aborts routed to the engine that raised them (see `health`).

use std::ffi::{c_char, CStr};
use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::{send_logs_to_tracing, LogOptions};

use super::EngineError;

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

/// The shared backend, initialised on first use. Code that drives llama.cpp directly in the
/// same process (benchmarks, tools) must use this one too.
pub fn get() -> Result<&'static LlamaBackend, EngineError> {
    BACKEND
        .get_or_init(|| {
            send_logs_to_tracing(LogOptions::default());
            // SAFETY: installs a process-wide callback; `on_abort` has the required signature
            // and may be called from any thread.
            unsafe {
                llama_cpp_sys_2::ggml_set_abort_callback(Some(on_abort));
            }
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Backend(e.clone()))
}

/// ggml's abort callback: called with the message just before `abort()`. Failing the engine
/// and parking the thread (see `health::on_llama_abort`) keeps the process up to report and drain.
unsafe extern "C" fn on_abort(message: *const c_char) {
    let message = if message.is_null() {
        String::new()
    } else {
        // SAFETY: ggml passes a NUL-terminated buffer that lives for the duration of the call.
        unsafe { CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned()
    };
    // A panic must not unwind into C; should one happen, llama.cpp's abort goes ahead.
    let _ = std::panic::catch_unwind(move || super::health::on_llama_abort(message));
}
