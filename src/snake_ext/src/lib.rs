//! `snake._ext`: the Python bindings of snake's Rust kernels.
//!
//! The kernels live in [`fib`] and [`stack`] as plain Rust functions with their own
//! `cargo test`s; this file only checks Python arguments, pins the numpy arrays, describes
//! their memory as byte slices and runs the kernels with the GIL released.

use std::os::raw::c_int;

use numpy::npyffi::{self, npy_intp, PY_ARRAY_API};
use numpy::{PyArray1, PyArrayDescr, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyComplex, PyTuple};

pub mod fib;
pub mod stack;

use stack::{PadError, PadValue, Source, Strided};

/// The n-th Fibonacci number by the naive recursion
/// ``n if n < 2 else fib(n - 1) + fib(n - 2)``: exponential time, on purpose. It is
/// the CPU demo kernel of the seed example.
///
/// Time O(1.62**n), memory O(n) of stack. The GIL is released for the whole
/// computation, so threads running it use every core.
///
/// Raises ``ValueError: fib: n=... is out of range: need 0 <= n <= 92 (fib(93)
/// overflows int64)``; ``TypeError: fib: n must be an int, not ...``.
#[pyfunction]
#[pyo3(name = "fib", signature = (n))]
fn py_fib(py: Python<'_>, n: &Bound<'_, PyAny>) -> PyResult<u64> {
    let out_of_range = || {
        let shown = n.repr().map(|r| r.to_string()).unwrap_or_default();
        PyValueError::new_err(format!(
            "fib: n={shown} is out of range: need 0 <= n <= {} (fib(93) overflows int64)",
            fib::FIB_MAX_N
        ))
    };
    let n = match n.extract::<i64>() {
        Ok(n) => n,
        Err(err) if err.is_instance_of::<PyOverflowError>(py) => return Err(out_of_range()),
        Err(_) => {
            return Err(PyTypeError::new_err(format!(
                "fib: n must be an int, not {}",
                type_name(n)
            )))
        }
    };
    if !(0..=fib::FIB_MAX_N as i64).contains(&n) {
        return Err(out_of_range());
    }
    Ok(py.detach(|| fib::fib(n as u64)))
}

/// Stack equally shaped arrays of one dtype along a new first axis, like
/// ``np.stack(arrays)``: the result has shape ``(len(arrays), *arrays[0].shape)`` and
/// the dtype of ``arrays[0]`` (byte order included).
///
/// ``arrays`` is a sequence (any iterable) of NumPy arrays of any dtype that holds no
/// Python objects. Inputs of any memory layout are accepted: a C-contiguous input is
/// copied with one ``memcpy``, a non-contiguous one (transposed, strided, reversed,
/// broadcast) is gathered by the kernel directly, without a temporary copy.
///
/// ``out``, if given, must be a C-contiguous, writeable array of exactly that shape
/// and dtype that shares no memory with the inputs; it is filled and returned, which
/// avoids the page faults of a fresh allocation (``Stream.batch()`` passes buffers
/// from its pool). Otherwise a new array is returned.
///
/// ``threads`` is how many threads copy, each a run of consecutive arrays: ``None``
/// (the default) uses one per 4 MiB of output, at most 4 and at most the cores this
/// process may run on, so small batches stay on the calling thread and a large one
/// gets the memory bandwidth of more than one core. ``threads=N`` uses up to ``N``
/// (at most 64, and at most one per array); ``threads=1`` never starts a thread (use
/// it when every core is busy with other work). The result does not depend on
/// ``threads``.
///
/// Time O(total bytes). The arguments are checked and the output allocated with the
/// GIL held; the copy runs with the GIL released. Other threads must not write to the
/// inputs or to ``out`` during the call (as for NumPy's own copies).
///
/// Raises:
///
/// - ``ValueError: stack: arrays is empty; need at least one array``;
/// - ``ValueError: stack: arrays[i] has shape ... dtype ...; expected shape ... dtype
///   ... like arrays[0]``;
/// - ``ValueError: stack: out has shape ... dtype ...; expected ...``, ``... out must
///   be C-contiguous``, ``... out is read-only``, ``... out shares memory with
///   arrays[i] ...``;
/// - ``TypeError: stack: arrays must be a sequence of numpy arrays, not ...``,
///   ``TypeError: stack: arrays[i] is ..., not a numpy.ndarray``, ``TypeError: stack:
///   out must be a numpy.ndarray, not ...``;
/// - ``TypeError: stack: arrays[0] has dtype ..., which holds Python objects ...``;
/// - ``ValueError: stack: threads=... is below 1 ...``.
#[pyfunction]
#[pyo3(name = "stack", signature = (arrays, out = None, threads = None))]
fn py_stack<'py>(
    py: Python<'py>,
    arrays: &Bound<'py, PyAny>,
    out: Option<&Bound<'py, PyAny>>,
    threads: Option<i64>,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    const NAME: &str = "stack";
    check_threads(NAME, threads)?;
    let arrays = collect_arrays(NAME, arrays)?;
    let first = &arrays[0];
    let dtype = first.dtype();
    check_no_objects(NAME, &dtype)?;
    let shape = first.shape().to_vec();
    for (i, array) in arrays.iter().enumerate().skip(1) {
        if array.shape() != shape.as_slice() || !array.dtype().is_equiv_to(&dtype) {
            return Err(PyValueError::new_err(format!(
                "{NAME}: arrays[{i}] has shape {} dtype {}; expected shape {} dtype {dtype} like arrays[0]",
                fmt_shape(array.shape()),
                array.dtype(),
                fmt_shape(&shape),
            )));
        }
    }
    let mut batch_shape = vec![arrays.len()];
    batch_shape.extend_from_slice(&shape);
    let out = output(py, NAME, out, &batch_shape, &dtype)?;
    check_no_overlap(NAME, &out, &arrays)?;

    // SAFETY: `arrays` and `out` are owned references held until this function returns, so
    // every array object, and the buffer it keeps alive through its base, outlives the
    // slices, which do not escape this function. Each slice spans exactly the bytes that
    // numpy's data pointer, shape, strides and itemsize describe, all inside the array's
    // buffer; shapes and strides are copied now, so a later change of an array's metadata by
    // another thread cannot move them. `out` is writeable and C-contiguous (checked by
    // `output`) and shares no byte with any input (checked above), so the one `&mut`
    // aliases no `&`. While the GIL is released the closure touches no Python object, only
    // these slices; a Python thread writing into the same arrays concurrently would race, as
    // it does with numpy's own GIL-free copies, and is documented as not allowed.
    let sources: Vec<Source<'_>> = arrays.iter().map(|a| unsafe { source(a) }).collect();
    let out_bytes = unsafe { bytes_mut(&out) };
    let threads = threads_for(threads, out_bytes.len());
    py.detach(|| stack::stack_into_threads(&sources, out_bytes, threads));
    drop(sources);
    Ok(out)
}

/// Stack variable-length arrays into one padded batch: ``(batch, lengths)``.
///
/// The arrays share their dtype and every axis but the first (their length): item i
/// of shape ``(n_i, *rest)`` is written to ``batch[i, :n_i]`` and ``pad_value`` fills
/// the rest. The batch has shape ``(len(arrays), L, *rest)``, ``L`` being ``pad_to``
/// if given, else the longest ``n_i``; ``lengths`` is the ``int64`` array of the
/// ``n_i``.
///
/// ``pad_value`` is a ``bool``, ``int``, ``float`` or ``complex``, cast to the dtype:
/// integer and bool dtypes need a value they hold exactly, float and complex dtypes
/// round it as NumPy does. Pads bool, int8-int64, uint8-uint64, float16/32/64 and
/// complex64/128. Layouts and ``out`` as for ``stack``: ``out``, if given, must be a
/// C-contiguous, writeable array of shape ``(len(arrays), L, *rest)`` and the arrays'
/// dtype, sharing no memory with them; it is filled and returned. ``threads`` as for
/// ``stack``.
///
/// Time O(batch bytes). Checks and allocation hold the GIL; the copy and the padding
/// run with the GIL released. Other threads must not write to the arrays or ``out``
/// meanwhile.
///
/// Raises the errors of ``stack`` (with ``pad_stack:``), and:
///
/// - ``ValueError: pad_stack: arrays[i] is 0-dimensional ...``;
/// - ``ValueError: pad_stack: pad_to=... is less than the longest length ...``;
/// - ``ValueError: pad_stack: pad_value=... does not fit dtype ...`` (or ``cannot be
///   represented exactly``);
/// - ``TypeError: pad_stack: pad_value must be a bool, int, float or complex, not ...``;
/// - ``TypeError: pad_stack: cannot pad dtype ...``.
#[pyfunction]
#[pyo3(
    name = "pad_stack",
    signature = (arrays, pad_value = None, out = None, pad_to = None, threads = None),
    text_signature = "(arrays, pad_value=0, out=None, pad_to=None, threads=None)"
)]
fn py_pad_stack<'py>(
    py: Python<'py>,
    arrays: &Bound<'py, PyAny>,
    pad_value: Option<&Bound<'py, PyAny>>,
    out: Option<&Bound<'py, PyAny>>,
    pad_to: Option<i64>,
    threads: Option<i64>,
) -> PyResult<Bound<'py, PyTuple>> {
    const NAME: &str = "pad_stack";
    check_threads(NAME, threads)?;
    let arrays = collect_arrays(NAME, arrays)?;
    let first = &arrays[0];
    let dtype = first.dtype();
    check_no_objects(NAME, &dtype)?;
    let mut lengths = Vec::with_capacity(arrays.len());
    let mut rest: &[usize] = &[];
    for (i, array) in arrays.iter().enumerate() {
        let Some((&len, tail)) = array.shape().split_first() else {
            return Err(PyValueError::new_err(format!(
                "{NAME}: arrays[{i}] is 0-dimensional (shape ()); each array needs a leading length axis"
            )));
        };
        if i == 0 {
            rest = tail;
        } else if tail != rest || !array.dtype().is_equiv_to(&dtype) {
            let mut expected = String::from("(*");
            for d in rest {
                expected.push_str(&format!(", {d}"));
            }
            expected.push(')');
            return Err(PyValueError::new_err(format!(
                "{NAME}: arrays[{i}] has shape {} dtype {}; expected shape {expected} dtype {dtype} like arrays[0]",
                fmt_shape(array.shape()),
                array.dtype(),
            )));
        }
        lengths.push(len);
    }
    let rest = rest.to_vec();
    let longest = lengths.iter().copied().max().unwrap_or(0);
    let max_len = match pad_to {
        None => longest,
        Some(p) if p >= 0 && p as u64 >= longest as u64 => p as usize,
        Some(p) => {
            let at = lengths.iter().position(|&l| l == longest).unwrap_or(0);
            return Err(PyValueError::new_err(format!(
                "{NAME}: pad_to={p} is less than the longest length {longest} (arrays[{at}])"
            )));
        }
    };

    let pad = pad_bytes(NAME, pad_value, &dtype)?;
    let itemsize = dtype.itemsize();
    let row_bytes = rest.iter().try_fold(itemsize, |acc, &d| acc.checked_mul(d));
    let Some(row_bytes) = row_bytes else {
        return Err(PyValueError::new_err(format!(
            "{NAME}: arrays are too large"
        )));
    };
    let mut batch_shape = vec![arrays.len(), max_len];
    batch_shape.extend_from_slice(&rest);
    let out = output(py, NAME, out, &batch_shape, &dtype)?;
    check_no_overlap(NAME, &out, &arrays)?;
    let lengths_array = PyArray1::from_iter(py, lengths.iter().map(|&l| l as i64));

    // SAFETY: as in `stack`: the arrays and `out` stay referenced until we return, the
    // slices match numpy's description of each buffer, `out` is writeable, C-contiguous and
    // disjoint from every input, and the closure touches no Python object.
    let sources: Vec<Source<'_>> = arrays.iter().map(|a| unsafe { source(a) }).collect();
    let out_bytes = unsafe { bytes_mut(&out) };
    let threads = threads_for(threads, out_bytes.len());
    py.detach(|| {
        stack::pad_stack_into_threads(
            &sources, &lengths, row_bytes, max_len, &pad, out_bytes, threads,
        )
    });
    drop(sources);
    PyTuple::new(py, [out.into_any(), lengths_array.into_any()])
}

/// Reject a `threads` argument below 1.
fn check_threads(name: &str, threads: Option<i64>) -> PyResult<()> {
    match threads {
        Some(t) if t < 1 => Err(PyValueError::new_err(format!(
            "{name}: threads={t} is below 1; pass a count >= 1, or None for one thread per {} MiB of output (at most {}, and at most the cores this process may use)",
            stack::MIN_BYTES_PER_THREAD >> 20,
            stack::MAX_THREADS,
        ))),
        _ => Ok(()),
    }
}

/// The most threads a copy starts when the caller asks for more.
const MAX_EXPLICIT_THREADS: usize = 64;

/// The thread count of a copy of `total` bytes: the caller's (at most
/// [`MAX_EXPLICIT_THREADS`]), else [`stack::auto_threads`].
fn threads_for(threads: Option<i64>, total: usize) -> usize {
    match threads {
        Some(t) => usize::try_from(t)
            .unwrap_or(usize::MAX)
            .clamp(1, MAX_EXPLICIT_THREADS),
        None => stack::auto_threads(total),
    }
}

/// Take the numpy arrays out of `arrays`, rejecting a non-iterable, a non-array element and
/// an empty sequence.
fn collect_arrays<'py>(
    name: &str,
    arrays: &Bound<'py, PyAny>,
) -> PyResult<Vec<Bound<'py, PyUntypedArray>>> {
    let iter = arrays.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "{name}: arrays must be a sequence of numpy arrays, not {}",
            type_name(arrays)
        ))
    })?;
    let mut out = Vec::new();
    for (i, item) in iter.enumerate() {
        let item = item?;
        match item.cast_into::<PyUntypedArray>() {
            Ok(array) => out.push(array),
            Err(err) => {
                return Err(PyTypeError::new_err(format!(
                    "{name}: arrays[{i}] is {}, not a numpy.ndarray",
                    type_name(&err.into_inner())
                )))
            }
        }
    }
    if out.is_empty() {
        return Err(PyValueError::new_err(format!(
            "{name}: arrays is empty; need at least one array"
        )));
    }
    Ok(out)
}

fn check_no_objects(name: &str, dtype: &Bound<'_, PyArrayDescr>) -> PyResult<()> {
    if dtype.has_object() {
        return Err(PyTypeError::new_err(format!(
            "{name}: arrays[0] has dtype {dtype}, which holds Python objects; only plain-data dtypes can be stacked"
        )));
    }
    Ok(())
}

/// Check the caller's `out`, or allocate a fresh C-contiguous array.
fn output<'py>(
    py: Python<'py>,
    name: &str,
    out: Option<&Bound<'py, PyAny>>,
    shape: &[usize],
    dtype: &Bound<'py, PyArrayDescr>,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    let Some(out) = out.filter(|o| !o.is_none()) else {
        return empty(py, shape, dtype);
    };
    let Ok(out) = out.cast::<PyUntypedArray>() else {
        return Err(PyTypeError::new_err(format!(
            "{name}: out must be a numpy.ndarray, not {}",
            type_name(out)
        )));
    };
    if out.shape() != shape || !out.dtype().is_equiv_to(dtype) {
        return Err(PyValueError::new_err(format!(
            "{name}: out has shape {} dtype {}; expected shape {} dtype {dtype}",
            fmt_shape(out.shape()),
            out.dtype(),
            fmt_shape(shape),
        )));
    }
    if !out.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{name}: out must be C-contiguous"
        )));
    }
    // SAFETY: `out` is a live numpy array; reading its flags field is what PyArray_FLAGS does.
    let flags = unsafe { (*npyffi::_PyArray_GET_ITEM_DATA(out.as_array_ptr())).flags };
    if flags & npyffi::NPY_ARRAY_WRITEABLE == 0 {
        return Err(PyValueError::new_err(format!("{name}: out is read-only")));
    }
    Ok(out.clone())
}

/// A new, uninitialised C-contiguous array of this shape and dtype (numpy.empty).
fn empty<'py>(
    py: Python<'py>,
    shape: &[usize],
    dtype: &Bound<'py, PyArrayDescr>,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    let mut dims: Vec<npy_intp> = Vec::with_capacity(shape.len());
    for &d in shape {
        dims.push(
            npy_intp::try_from(d)
                .map_err(|_| PyValueError::new_err("array dimension too large"))?,
        );
    }
    // SAFETY: PyArray_Empty reads `dims.len()` dimensions and steals the dtype reference
    // that `into_dtype_ptr` hands over; it returns a new reference or NULL with an exception.
    let array = unsafe {
        let ptr = PY_ARRAY_API.PyArray_Empty(
            py,
            dims.len() as c_int,
            dims.as_mut_ptr(),
            dtype.clone().into_dtype_ptr(),
            0,
        );
        Bound::from_owned_ptr_or_err(py, ptr)?
    };
    Ok(array.cast_into::<PyUntypedArray>()?)
}

/// The absolute byte range `[start, end)` of an array's elements; `None` if it has no bytes.
fn address_range(array: &Bound<'_, PyUntypedArray>) -> Option<(usize, usize)> {
    let (start, len) = stack::byte_span(array.shape(), array.strides(), array.dtype().itemsize())?;
    let data = data_ptr(array) as usize;
    let lo = data.wrapping_add_signed(start);
    Some((lo, lo + len))
}

fn check_no_overlap(
    name: &str,
    out: &Bound<'_, PyUntypedArray>,
    arrays: &[Bound<'_, PyUntypedArray>],
) -> PyResult<()> {
    let Some((out_lo, out_hi)) = address_range(out) else {
        return Ok(());
    };
    for (i, array) in arrays.iter().enumerate() {
        if let Some((lo, hi)) = address_range(array) {
            if lo < out_hi && out_lo < hi {
                return Err(PyValueError::new_err(format!(
                    "{name}: out shares memory with arrays[{i}]; pass an out buffer separate from the inputs"
                )));
            }
        }
    }
    Ok(())
}

fn data_ptr(array: &Bound<'_, PyUntypedArray>) -> *mut u8 {
    // SAFETY: `array` is a live numpy array; this reads its data field, as PyArray_DATA does.
    unsafe {
        (*npyffi::_PyArray_GET_ITEM_DATA(array.as_array_ptr()))
            .data
            .cast()
    }
}

/// Describe an array's memory as a byte slice for the kernels.
///
/// # Safety
/// The array's buffer must stay alive and unwritten for `'a` (the caller holds `array`,
/// and with it the buffer, and lets no `&mut` alias it).
unsafe fn source<'a>(array: &'a Bound<'_, PyUntypedArray>) -> Source<'a> {
    let itemsize = array.dtype().itemsize();
    let data = data_ptr(array);
    let shape = array.shape().to_vec();
    let strides = array.strides().to_vec();
    let Some((start, len)) = stack::byte_span(&shape, &strides, itemsize) else {
        return Source::Contiguous(&[]);
    };
    if array.is_c_contiguous() {
        let nbytes = shape.iter().product::<usize>() * itemsize;
        // SAFETY: a C-contiguous array's `nbytes` bytes start at its data pointer.
        return Source::Contiguous(unsafe { std::slice::from_raw_parts(data, nbytes) });
    }
    // SAFETY: `byte_span` is the hull of every element's bytes, all within the buffer.
    let bytes = unsafe { std::slice::from_raw_parts(data.offset(start), len) };
    Source::Strided(Strided {
        bytes,
        offset: start.unsigned_abs(),
        shape,
        strides,
        itemsize,
    })
}

/// The bytes of a C-contiguous, writeable array, for the kernels to write.
///
/// # Safety
/// As for [`source`], and no other reference may alias the array's bytes for `'a`.
#[expect(
    clippy::mut_from_ref,
    reason = "numpy owns the bytes; `&Bound` is how we hold the array"
)]
unsafe fn bytes_mut<'a>(array: &'a Bound<'_, PyUntypedArray>) -> &'a mut [u8] {
    let nbytes = array.shape().iter().product::<usize>() * array.dtype().itemsize();
    if nbytes == 0 {
        return &mut [];
    }
    // SAFETY: the caller checked `array` is C-contiguous and writeable, so its `nbytes` bytes
    // start at its data pointer and may be written.
    unsafe { std::slice::from_raw_parts_mut(data_ptr(array), nbytes) }
}

/// `pad_value` as the bytes of one element of `dtype`.
fn pad_bytes(
    name: &str,
    pad_value: Option<&Bound<'_, PyAny>>,
    dtype: &Bound<'_, PyArrayDescr>,
) -> PyResult<Vec<u8>> {
    let value = match pad_value {
        None => PadValue::Int(0),
        Some(v) if v.is_instance_of::<PyBool>() => PadValue::Bool(v.is_truthy()?),
        Some(v) if v.is_instance_of::<PyComplex>() => {
            let c = v.cast::<PyComplex>()?;
            PadValue::Complex(c.real(), c.imag())
        }
        // Python and numpy integers (anything with __index__), then anything with __float__.
        Some(v) => match v.extract::<i128>() {
            Ok(i) => PadValue::Int(i),
            Err(_) => match v.extract::<f64>() {
                Ok(f) => PadValue::Float(f),
                Err(_) => {
                    return Err(PyTypeError::new_err(format!(
                        "{name}: pad_value must be a bool, int, float or complex, not {}",
                        type_name(v)
                    )))
                }
            },
        },
    };
    let swap = dtype.is_native_byteorder() == Some(false);
    let shown = match pad_value {
        Some(v) => v.repr()?.to_string(),
        None => "0".to_owned(),
    };
    stack::pad_element(dtype.kind(), dtype.itemsize(), value, swap).map_err(|e| match e {
        PadError::UnsupportedDtype => PyTypeError::new_err(format!(
            "{name}: cannot pad dtype {dtype}; padding supports bool, int8-int64, uint8-uint64, float16/32/64 and complex64/128"
        )),
        PadError::OutOfRange => {
            PyValueError::new_err(format!("{name}: pad_value={shown} does not fit dtype {dtype}"))
        }
        PadError::Inexact => PyValueError::new_err(format!(
            "{name}: pad_value={shown} cannot be represented exactly in dtype {dtype}"
        )),
    })
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

/// A shape as Python writes the tuple: `()`, `(3,)`, `(3, 4)`.
fn fmt_shape(shape: &[usize]) -> String {
    match shape {
        [] => "()".to_owned(),
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// snake's Rust kernels: ``fib``, ``stack`` and ``pad_stack``. Use them through
/// ``snake.kernels``; this private module may change without notice.
#[pymodule]
#[pyo3(name = "_ext")]
fn snake_ext(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_fib, m)?)?;
    m.add_function(wrap_pyfunction!(py_stack, m)?)?;
    m.add_function(wrap_pyfunction!(py_pad_stack, m)?)?;
    Ok(())
}
