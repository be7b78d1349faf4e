//! JPEG decoding with libjpeg-turbo's decoder, configured the way Pillow configures it.
//!
//! Pillow's `JpegImageFile` hands the whole file to libjpeg-turbo (`libImaging/JpegDecode.c`)
//! with the library's defaults — `JDCT_ISLOW` integer IDCT, fancy (triangle) chroma
//! upsampling, block smoothing for progressive scans, no scaling — and asks for
//! `out_color_space` `JCS_GRAYSCALE` (1 component, mode `L`), `JCS_RGB`/`JCS_EXT_RGBX`
//! (3 components, mode `RGB`; the colour transform is guessed by libjpeg from the JFIF/Adobe
//! markers) or `JCS_CMYK` (4 components, mode `CMYK`, YCCK converted by libjpeg). CMYK is always
//! read as `CMYK;I` ("assume adobe conventions"): every sample is inverted, Adobe marker or not.
//!
//! The decoder here is the same C code: mozjpeg's decompressor is libjpeg-turbo's, vendored
//! and built by the `mozjpeg-sys` crate (no system library). Its SIMD code is assembled with
//! NASM when `nasm` is installed (`mozjpeg-sys/nasm_simd`; without it the build falls back to
//! the C code with a cargo warning). Valid files decode to exactly Pillow's samples either way
//! (the SIMD integer IDCT, upsampling and colour conversion are bit-exact with the C code on
//! in-range data); on corrupt entropy data, whose out-of-range coefficients the 16-bit SIMD IDCT
//! wraps differently from the 32-bit C one, only the SIMD build matches Pillow's wheels (which
//! use SIMD) in the garbage blocks.
//!
//! Errors: libjpeg's `error_exit` is replaced by one that unwinds (`resume_unwind`, through C
//! compiled with `-fexceptions` and `extern "C-unwind"` callbacks, which is how the `mozjpeg`
//! crate is built) and is caught here, so a corrupt file is an error, never an abort or a
//! `longjmp` over Rust frames. Truncation follows Pillow: its source manager suspends when the
//! data runs out, and `ImageFile.load` then raises "image file is truncated" — unless every
//! scanline was already out and only `jpeg_finish_decompress` wanted more (a baseline file
//! missing just its EOI marker still opens). The `mozjpeg` source manager instead fakes an EOI
//! and emits the `JWRN_JPEG_EOF` warning, which is recorded and turned into the same error when
//! it happens before the last scanline.

use std::cell::Cell;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use mozjpeg::{ColorSpace, Decompress};
use mozjpeg_sys as ffi;

use super::decode::{check_dimensions, Decoded, Pixels};
use super::{Limits, PreprocessError};

thread_local! {
    /// Set when libjpeg's source ran out of data on this thread (see [`emit_message`]).
    static HIT_EOF: Cell<bool> = const { Cell::new(false) };
    /// `msg_code` of the last fatal error raised on this thread (see [`error_exit`]).
    static ERROR_CODE: Cell<c_int> = const { Cell::new(0) };
}

/// libjpeg's `JMSG_LENGTH_MAX`: the size of the buffer `format_message` writes into.
const JMSG_LENGTH_MAX: usize = 200;

/// libjpeg's formatted text for the current `msg_code`.
fn message(cinfo: &mut ffi::jpeg_common_struct) -> String {
    let mut buf = [0u8; JMSG_LENGTH_MAX];
    // SAFETY: libjpeg calls the error manager with `cinfo.err` pointing at the live
    // `jpeg_error_mgr` it was created with. Its `format_message` (jerror.c) writes at most
    // JMSG_LENGTH_MAX bytes, NUL included, into the buffer: the binding declares the parameter
    // as `&[u8; 80]`, so the function pointer is reinterpreted with a mutable pointer parameter
    // (same C ABI: one pointer) to hand it a writable buffer of the documented size.
    let formatted = unsafe {
        match cinfo.err.as_ref().and_then(|e| e.format_message) {
            Some(f) => {
                let f: unsafe extern "C-unwind" fn(&mut ffi::jpeg_common_struct, *mut u8) = std::mem::transmute(f);
                f(cinfo, buf.as_mut_ptr());
                true
            }
            None => false,
        }
    };
    if !formatted {
        return "libjpeg error".into();
    }
    let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// `error_exit`: must not return. Unwinds to the `catch_unwind` in [`decode`] (without running
/// the panic hook, so nothing is printed).
extern "C-unwind" fn error_exit(cinfo: &mut ffi::jpeg_common_struct) {
    // SAFETY: as in `message`, `cinfo.err` points at the live error manager.
    let code = unsafe { cinfo.err.as_ref().map_or(0, |e| e.msg_code) };
    ERROR_CODE.with(|c| c.set(code));
    let msg = message(cinfo);
    std::panic::resume_unwind(Box::new(msg));
}

/// `emit_message`: warnings (level -1, "corrupt JPEG data: ..." and the like) are ignored as
/// Pillow ignores them, except running out of data, which is recorded; trace messages
/// (level ≥ 0) are dropped.
extern "C-unwind" fn emit_message(cinfo: &mut ffi::jpeg_common_struct, level: c_int) {
    // SAFETY: as in `message`, `cinfo.err` points at the live error manager.
    let code = unsafe { cinfo.err.as_ref().map(|e| e.msg_code) };
    if level < 0 && code == Some(ffi::JWRN_JPEG_EOF) {
        HIT_EOF.with(|f| f.set(true));
    }
}

fn error_mgr() -> ffi::jpeg_error_mgr {
    // SAFETY: `jpeg_error_mgr` is a plain C struct (function pointers as `Option`, integers,
    // raw pointers, a union of arrays) for which all-zero bytes are a valid value;
    // `jpeg_std_error` then fills in every field.
    let mut err: ffi::jpeg_error_mgr = unsafe { std::mem::zeroed() };
    // SAFETY: `err` is a valid, exclusively borrowed error manager.
    unsafe { ffi::jpeg_std_error(&mut err) };
    err.error_exit = Some(error_exit);
    err.emit_message = Some(emit_message);
    err
}

fn corrupt(msg: impl Into<String>) -> PreprocessError {
    PreprocessError::Corrupt(msg.into())
}

fn truncated() -> PreprocessError {
    corrupt("image file is truncated (JPEG data ends before the image is complete)")
}

/// Decode a JPEG as Pillow's `Image.open(...)` + `load()` would: `L`, `RGB` or `CMYK` (inverted
/// as `CMYK;I`). The size is checked against `limits` from the header, before any pixel data is
/// decoded or allocated.
pub(super) fn decode(bytes: &[u8], limits: &Limits) -> Result<Decoded, PreprocessError> {
    HIT_EOF.with(|f| f.set(false));
    ERROR_CODE.with(|c| c.set(0));
    let result = catch_unwind(AssertUnwindSafe(|| decode_inner(bytes, limits)));
    let hit_eof = HIT_EOF.with(|f| f.replace(false));
    let code = ERROR_CODE.with(|c| c.replace(0));
    match result {
        Ok(r) => r,
        // libjpeg gave up after running out of data ("no image in the JPEG file", or a marker
        // length past the end of the file).
        Err(_) if hit_eof || code == ffi::JERR_FILE_READ => Err(truncated()),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the JPEG decoder failed".into());
            Err(corrupt(msg))
        }
    }
}

fn decode_inner(bytes: &[u8], limits: &Limits) -> Result<Decoded, PreprocessError> {
    let hit_eof = || HIT_EOF.with(|f| f.get());
    // `from_mem` runs `jpeg_read_header`: markers up to the first SOS, no pixel data.
    let dec = Decompress::builder().with_err(error_mgr()).from_mem(bytes).map_err(|e| corrupt(e.to_string()))?;
    if hit_eof() {
        return Err(truncated());
    }
    let (w, h) = (dec.width(), dec.height());
    let (w, h) = (
        u32::try_from(w).map_err(|_| corrupt("JPEG width out of range"))?,
        u32::try_from(h).map_err(|_| corrupt("JPEG height out of range"))?,
    );
    check_dimensions(w, h, limits)?;
    let out = match dec.components().len() {
        1 => ColorSpace::JCS_GRAYSCALE,
        3 => ColorSpace::JCS_RGB,
        4 => ColorSpace::JCS_CMYK,
        n => return Err(PreprocessError::Unsupported(format!("JPEG with {n} components (Pillow reads 1, 3 or 4)"))),
    };
    // Progressive files are read whole here (`jpeg_start_decompress` consumes every scan).
    let mut started = dec.to_colorspace(out).map_err(|e| corrupt(e.to_string()))?;
    let mut v: Vec<u8> = started.read_scanlines().map_err(|e| corrupt(e.to_string()))?;
    if hit_eof() {
        return Err(truncated());
    }
    // Pillow calls `jpeg_finish_decompress` too (an error there is an error), but data running
    // out at this point is accepted (`JpegDecode.c`: suspension with every line read is done):
    // a missing EOI (the source fakes one), or a marker whose length points past the end of the
    // file (the `mozjpeg` source's `skip_input_data` then fails with `JERR_FILE_READ`; a slice
    // reader has no other read error).
    ERROR_CODE.with(|c| c.set(0));
    match catch_unwind(AssertUnwindSafe(move || started.finish())) {
        Ok(r) => r.map_err(|e| corrupt(e.to_string()))?,
        Err(_) if ERROR_CODE.with(|c| c.get()) == ffi::JERR_FILE_READ => {}
        Err(payload) => std::panic::resume_unwind(payload),
    }
    let pixels = match out {
        ColorSpace::JCS_GRAYSCALE => Pixels::L(v),
        ColorSpace::JCS_RGB => Pixels::Rgb(v),
        _ => {
            v.iter_mut().for_each(|x| *x = 255 - *x);
            Pixels::Cmyk(v)
        }
    };
    Decoded::new(w, h, pixels).ok_or_else(|| corrupt("JPEG decoded to an unexpected size"))
}
