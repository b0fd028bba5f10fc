//! What this build's llama.cpp does on the CPU: the features ggml was compiled for and the
//! extra weight layouts it may choose. The default build leaves ggml's AMX kernels out (they
//! segfault on some Xeons, llama.cpp #20824; see `.cargo/config.toml`), and this is where a
//! build that has them again shows it: in the engine's start-up log and in a test.

use std::ffi::CStr;

use llama_cpp_sys_2 as sys;

/// llama.cpp's own summary of the CPU features it was built with (`llama_print_system_info`),
/// e.g. `CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | ... | AVX512 = 1 | OPENMP = 1 | REPACK = 1 |`.
pub fn system_info() -> String {
    // SAFETY: returns a pointer to a static, NUL-terminated buffer llama.cpp owns; it is read
    // at once. The backend is initialised first, as llama.cpp expects.
    let info = unsafe {
        let _ = super::backend::get();
        let p = sys::llama_print_system_info();
        if p.is_null() {
            return String::new();
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    };
    info.trim().to_string()
}

/// Names of the extra buffer types the CPU backend offers for weights (`CPU_REPACK`, and
/// `AMX` in a build with AMX kernels on a CPU that has AMX): the layouts llama.cpp places
/// weights in when it loads a model on the CPU.
pub fn extra_buffer_types() -> Vec<String> {
    let _ = super::backend::get();
    let mut names = Vec::new();
    // SAFETY: plain queries of ggml's backend registry. The proc address, when present, has the
    // documented type `ggml_backend_dev_get_extra_bufts_t`; it returns a NULL-terminated array
    // of buffer types owned by ggml (static), whose names are static C strings.
    unsafe {
        let dev = sys::ggml_backend_dev_by_type(sys::GGML_BACKEND_DEVICE_TYPE_CPU);
        if dev.is_null() {
            return names;
        }
        let reg = sys::ggml_backend_dev_backend_reg(dev);
        if reg.is_null() {
            return names;
        }
        let f = sys::ggml_backend_reg_get_proc_address(
            reg,
            c"ggml_backend_dev_get_extra_bufts".as_ptr(),
        );
        if f.is_null() {
            return names;
        }
        let get: sys::ggml_backend_dev_get_extra_bufts_t = std::mem::transmute(f);
        let Some(get) = get else { return names };
        let mut at = get(dev);
        while !at.is_null() && !(*at).is_null() {
            let name = sys::ggml_backend_buft_name(*at);
            if !name.is_null() {
                names.push(CStr::from_ptr(name).to_string_lossy().into_owned());
            }
            at = at.add(1);
        }
    }
    names
}

/// Whether this build's ggml has its AMX kernels compiled in.
pub fn amx_kernels() -> bool {
    // SAFETY: a constant query with no arguments.
    unsafe { sys::ggml_cpu_has_amx_int8() != 0 }
}
