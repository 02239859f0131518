//! Batching kernels: copy N same-shaped arrays, seen as raw bytes, into one contiguous
//! batch buffer (`stack_into`), or into a padded batch of variable-length items
//! (`pad_stack_into`). They know nothing of Python: `lib.rs` pins the arrays, describes
//! their memory as byte slices, and calls these with the GIL released.
//!
//! Every slice access is bounds-checked: a wrong layout description panics, it never
//! reads or writes outside the slices it was given. The one `unsafe` block, the
//! non-temporal copy of large batches ([`copy_streaming`]), writes only within the
//! 64-byte chunks that `chunks_exact_mut` hands it.

/// One input array, as bytes.
#[derive(Debug, Clone)]
pub enum Source<'a> {
    /// A C-contiguous array: its bytes in logical (row-major) order.
    Contiguous(&'a [u8]),
    /// An array of any layout (transposed, sliced, negative strides).
    Strided(Strided<'a>),
}

/// An array of any layout: the element at index `(i0, .., ik)` starts at byte
/// `offset + i0 * strides[0] + .. + ik * strides[k]` of `bytes`, and is `itemsize` bytes long.
#[derive(Debug, Clone)]
pub struct Strided<'a> {
    /// The smallest byte range holding every element (see [`byte_span`]).
    pub bytes: &'a [u8],
    /// Where element `(0, .., 0)` starts in `bytes`.
    pub offset: usize,
    /// Extent of each axis.
    pub shape: Vec<usize>,
    /// Byte step of each axis; may be zero or negative.
    pub strides: Vec<isize>,
    /// Bytes per element.
    pub itemsize: usize,
}

/// The byte range that an array of this layout touches, relative to the address of
/// element `(0, .., 0)`: `Some((start, len))` with `start <= 0`, or `None` when the
/// array holds no bytes (an axis of extent 0, or `itemsize == 0`).
///
/// Returns `None` as well if the range does not fit in `isize` (impossible for an array
/// that exists in memory).
pub fn byte_span(shape: &[usize], strides: &[isize], itemsize: usize) -> Option<(isize, usize)> {
    assert_eq!(
        shape.len(),
        strides.len(),
        "shape and strides differ in rank"
    );
    if itemsize == 0 || shape.contains(&0) {
        return None;
    }
    let (mut lo, mut hi) = (0isize, 0isize);
    for (&extent, &stride) in shape.iter().zip(strides) {
        let last = isize::try_from(extent - 1).ok()?.checked_mul(stride)?;
        if last < 0 {
            lo = lo.checked_add(last)?;
        } else {
            hi = hi.checked_add(last)?;
        }
    }
    let len = hi
        .checked_sub(lo)?
        .checked_add(isize::try_from(itemsize).ok()?)?;
    Some((lo, len as usize))
}

impl Source<'_> {
    /// Logical size in bytes: what [`Source::copy_to`] writes.
    pub fn nbytes(&self) -> usize {
        match self {
            Source::Contiguous(bytes) => bytes.len(),
            Source::Strided(s) => s.shape.iter().product::<usize>() * s.itemsize,
        }
    }

    /// Write the array's elements in C order into `dst`, which must be exactly
    /// [`Source::nbytes`] long.
    pub fn copy_to(&self, dst: &mut [u8]) {
        self.copy_to_mode(dst, false);
    }

    /// [`Source::copy_to`]; with `streaming`, a contiguous source is written with
    /// non-temporal stores (see [`copy_streaming`]). The caller runs [`store_fence`]
    /// before anyone else reads `dst`.
    fn copy_to_mode(&self, dst: &mut [u8], streaming: bool) {
        assert_eq!(
            dst.len(),
            self.nbytes(),
            "destination size differs from the source's"
        );
        match self {
            Source::Contiguous(bytes) if streaming => copy_streaming(dst, bytes),
            Source::Contiguous(bytes) => dst.copy_from_slice(bytes),
            Source::Strided(s) => s.copy_to(dst),
        }
    }
}

/// Outputs of at least this many bytes are written with non-temporal stores: they
/// go to memory without first reading each destination line into the cache (a
/// plain copy reads every line it writes), and they do not evict the cache for
/// data that would not fit in it anyway. Below it, a plain copy leaves the batch in
/// the cache for whoever reads it next.
pub const STREAM_MIN_BYTES: usize = 16 << 20;

/// Copy `src` into `dst` (the same length) with non-temporal stores where the
/// processor has them (x86-64: SSE2's `movntdq`, 64 bytes per step, after plain
/// copies up to `dst`'s 16-byte alignment; the tail is a plain copy); a plain copy
/// elsewhere. Run [`store_fence`] before `dst` is read by another thread.
pub fn copy_streaming(dst: &mut [u8], src: &[u8]) {
    assert_eq!(
        dst.len(),
        src.len(),
        "destination size differs from the source's"
    );
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        let n = dst.len();
        let head = ((dst.as_ptr() as usize).wrapping_neg() & 15).min(n);
        let body = (n - head) / 64 * 64;
        dst[..head].copy_from_slice(&src[..head]);
        let (d_body, d_tail) = dst[head..].split_at_mut(body);
        let (s_body, s_tail) = src[head..].split_at(body);
        for (d, s) in d_body.chunks_exact_mut(64).zip(s_body.chunks_exact(64)) {
            let (d, s) = (
                d.as_mut_ptr().cast::<__m128i>(),
                s.as_ptr().cast::<__m128i>(),
            );
            // SAFETY: `d` and `s` point at 64 bytes each (chunks_exact), `d` 16-byte
            // aligned (after `head`); the loads are unaligned loads. SSE2 is part of
            // every x86-64 processor.
            unsafe {
                let (a, b) = (_mm_loadu_si128(s), _mm_loadu_si128(s.add(1)));
                let (c, e) = (_mm_loadu_si128(s.add(2)), _mm_loadu_si128(s.add(3)));
                _mm_stream_si128(d, a);
                _mm_stream_si128(d.add(1), b);
                _mm_stream_si128(d.add(2), c);
                _mm_stream_si128(d.add(3), e);
            }
        }
        d_tail.copy_from_slice(s_tail);
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(src);
}

/// Order the non-temporal stores of this thread before its later stores (and before
/// the end of the call that made them): they are weakly ordered otherwise.
pub fn store_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `sfence` has no operands; SSE is part of every x86-64 processor.
    unsafe {
        std::arch::x86_64::_mm_sfence();
    }
}

impl Strided<'_> {
    fn copy_to(&self, dst: &mut [u8]) {
        if dst.is_empty() {
            return;
        }
        // Fold the trailing axes that are laid out contiguously into one run of bytes,
        // dropping axes of extent 1 (their stride is meaningless).
        let mut run = self.itemsize;
        let mut outer = self.shape.len();
        while outer > 0 {
            let (extent, stride) = (self.shape[outer - 1], self.strides[outer - 1]);
            if extent == 1 || stride == run as isize {
                run *= extent;
                outer -= 1;
            } else {
                break;
            }
        }
        let (shape, strides) = (&self.shape[..outer], &self.strides[..outer]);
        // Specialise the common element sizes so that the per-run copy is a plain move.
        match run {
            1 => gather(self.bytes, self.offset, shape, strides, 1, dst),
            2 => gather(self.bytes, self.offset, shape, strides, 2, dst),
            4 => gather(self.bytes, self.offset, shape, strides, 4, dst),
            8 => gather(self.bytes, self.offset, shape, strides, 8, dst),
            16 => gather(self.bytes, self.offset, shape, strides, 16, dst),
            _ => gather(self.bytes, self.offset, shape, strides, run, dst),
        }
    }
}

/// Copy runs of `run` bytes, one per index of the `shape`/`strides` axes in C order,
/// from `bytes` (starting at `offset`) into `dst`.
#[inline(always)]
fn gather(
    bytes: &[u8],
    offset: usize,
    shape: &[usize],
    strides: &[isize],
    run: usize,
    dst: &mut [u8],
) {
    let Some((&inner_n, outer_shape)) = shape.split_last() else {
        dst.copy_from_slice(&bytes[offset..offset + run]);
        return;
    };
    let inner_stride = strides[shape.len() - 1];
    let outer_strides = &strides[..outer_shape.len()];
    let mut index = vec![0usize; outer_shape.len()];
    let mut row_start = offset as isize;
    for row in dst.chunks_exact_mut(inner_n * run) {
        let mut at = row_start;
        for item in row.chunks_exact_mut(run) {
            let from = at as usize;
            item.copy_from_slice(&bytes[from..from + run]);
            at += inner_stride;
        }
        // Advance the odometer over the outer axes.
        for axis in (0..outer_shape.len()).rev() {
            index[axis] += 1;
            row_start += outer_strides[axis];
            if index[axis] < outer_shape[axis] {
                break;
            }
            row_start -= outer_strides[axis] * outer_shape[axis] as isize;
            index[axis] = 0;
        }
    }
}

/// Stack `items` into `out`: item `i` is written in C order to
/// `out[i * item_bytes .. (i + 1) * item_bytes]`, where `item_bytes = out.len() / items.len()`.
///
/// A contiguous item is one `memcpy`. Time O(out.len()).
///
/// # Panics
/// If `out.len()` is not `items.len()` times the size of every item.
pub fn stack_into(items: &[Source<'_>], out: &mut [u8]) {
    let streaming = out.len() >= STREAM_MIN_BYTES;
    stack_into_mode(items, out, streaming);
}

/// [`stack_into`], with non-temporal stores if `streaming` (the whole batch's size
/// decides, not a thread's part of it).
fn stack_into_mode(items: &[Source<'_>], out: &mut [u8], streaming: bool) {
    if items.is_empty() {
        assert!(out.is_empty(), "no items but a non-empty output");
        return;
    }
    let item_bytes = out.len() / items.len();
    assert_eq!(
        item_bytes * items.len(),
        out.len(),
        "output size is not a multiple of the item count"
    );
    if item_bytes == 0 {
        assert!(
            items.iter().all(|item| item.nbytes() == 0),
            "item larger than its output slot"
        );
        return;
    }
    for (item, slot) in items.iter().zip(out.chunks_exact_mut(item_bytes)) {
        item.copy_to_mode(slot, streaming);
    }
    if streaming {
        store_fence();
    }
}

/// Bytes below which a copy stays on one thread: starting a thread costs tens of
/// microseconds, the time to copy about a megabyte.
pub const MIN_BYTES_PER_THREAD: usize = 4 << 20;
/// The most threads one copy uses: past two or four cores a copy is bound by memory
/// bandwidth, not by cores.
pub const MAX_THREADS: usize = 4;

/// How many threads a copy of `total` bytes uses by default: one per
/// [`MIN_BYTES_PER_THREAD`], at most [`MAX_THREADS`] and at most the cores this process may
/// run on (its affinity mask and cgroup quota, read once).
pub fn auto_threads(total: usize) -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    (total / MIN_BYTES_PER_THREAD).clamp(1, cores.clamp(1, MAX_THREADS))
}

/// Run `work(range, out_part)` over `n_items` items whose output slots are `slot_bytes`
/// each, split into at most `threads` runs of consecutive items, each on its own thread
/// (the last on the calling thread). Every slot is written by exactly one thread.
fn split_items<F>(n_items: usize, slot_bytes: usize, out: &mut [u8], threads: usize, work: F)
where
    F: Fn(std::ops::Range<usize>, &mut [u8]) + Sync,
{
    let threads = threads.clamp(1, n_items.max(1));
    if threads == 1 || slot_bytes == 0 {
        work(0..n_items, out);
        return;
    }
    let per = n_items.div_ceil(threads);
    let work = &work;
    std::thread::scope(|scope| {
        let mut rest = out;
        let mut start = 0;
        while start < n_items {
            let end = (start + per).min(n_items);
            let (part, tail) = std::mem::take(&mut rest).split_at_mut((end - start) * slot_bytes);
            rest = tail;
            if end == n_items {
                work(start..end, part);
            } else {
                scope.spawn(move || work(start..end, part));
            }
            start = end;
        }
    });
}

/// [`stack_into`] on up to `threads` threads, each writing the slots of a run of
/// consecutive items. The result is the same for any `threads`.
pub fn stack_into_threads(items: &[Source<'_>], out: &mut [u8], threads: usize) {
    if items.is_empty() || threads <= 1 || out.len() % items.len() != 0 {
        return stack_into(items, out);
    }
    let slot = out.len() / items.len();
    let streaming = out.len() >= STREAM_MIN_BYTES;
    split_items(items.len(), slot, out, threads, |range, part| {
        stack_into_mode(&items[range], part, streaming)
    });
}

/// [`pad_stack_into`] on up to `threads` threads, as [`stack_into_threads`].
pub fn pad_stack_into_threads(
    items: &[Source<'_>],
    lengths: &[usize],
    row_bytes: usize,
    max_len: usize,
    pad: &[u8],
    out: &mut [u8],
    threads: usize,
) {
    let slot = max_len * row_bytes;
    if items.is_empty()
        || threads <= 1
        || items.len() != lengths.len()
        || out.len() != items.len() * slot
    {
        return pad_stack_into(items, lengths, row_bytes, max_len, pad, out);
    }
    split_items(items.len(), slot, out, threads, |range, part| {
        pad_stack_into(
            &items[range.clone()],
            &lengths[range],
            row_bytes,
            max_len,
            pad,
            part,
        )
    });
}

/// Stack variable-length `items` into the padded batch `out` of logical shape
/// `(N, max_len, *row)`: item `i` holds `lengths[i]` rows of `row_bytes` bytes each; its
/// slot of `max_len * row_bytes` bytes gets the item's bytes, then copies of the element
/// `pad` up to the slot's end.
///
/// Time O(out.len()).
///
/// # Panics
/// If the sizes disagree: `out.len() != N * max_len * row_bytes`, an item whose size is not
/// `lengths[i] * row_bytes`, a length above `max_len`, or (with padding to write) a
/// `row_bytes` that is not a multiple of `pad.len()`.
pub fn pad_stack_into(
    items: &[Source<'_>],
    lengths: &[usize],
    row_bytes: usize,
    max_len: usize,
    pad: &[u8],
    out: &mut [u8],
) {
    assert_eq!(items.len(), lengths.len(), "one length per item");
    let slot_bytes = max_len * row_bytes;
    assert_eq!(
        out.len(),
        items.len() * slot_bytes,
        "output size is not N * max_len * row_bytes"
    );
    if slot_bytes == 0 {
        assert!(
            items.iter().all(|item| item.nbytes() == 0),
            "item larger than its output slot"
        );
        return;
    }
    for ((item, &len), slot) in items
        .iter()
        .zip(lengths)
        .zip(out.chunks_exact_mut(slot_bytes))
    {
        assert!(len <= max_len, "length {len} above max_len {max_len}");
        let (data, tail) = slot.split_at_mut(len * row_bytes);
        item.copy_to(data);
        fill(tail, pad);
    }
}

/// Fill `dst` with repeated copies of the element `pad`.
fn fill(dst: &mut [u8], pad: &[u8]) {
    if dst.is_empty() {
        return;
    }
    assert!(
        !pad.is_empty() && dst.len() % pad.len() == 0,
        "padding is not a whole number of elements"
    );
    if pad.iter().all(|&b| b == pad[0]) {
        dst.fill(pad[0]); // zeros, -1 and the like: a memset
        return;
    }
    for element in dst.chunks_exact_mut(pad.len()) {
        element.copy_from_slice(pad);
    }
}

/// A Python scalar given as `pad_value`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PadValue {
    Bool(bool),
    Int(i128),
    Float(f64),
    Complex(f64, f64),
}

/// Why a pad value cannot become an element of a dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadError {
    /// The dtype is not bool, int8-64, uint8-64, float16/32/64 or complex64/128.
    UnsupportedDtype,
    /// The value is outside the integer (or bool) dtype's range.
    OutOfRange,
    /// The value is not an integer (or has an imaginary part) and the dtype needs one.
    Inexact,
}

/// The bytes of one element of the numpy dtype (`kind` code `b`/`i`/`u`/`f`/`c`, `itemsize`)
/// that equals `value`, in native byte order, or byte-swapped if `swap`.
///
/// Integer and bool dtypes take only values they hold exactly; float and complex dtypes
/// round to nearest, as numpy's casts do (a value beyond float16's range becomes infinity).
pub fn pad_element(
    kind: u8,
    itemsize: usize,
    value: PadValue,
    swap: bool,
) -> Result<Vec<u8>, PadError> {
    let (mut bytes, component) = match kind {
        b'b' if itemsize == 1 => (vec![u8::from(as_bool(value)?)], 1),
        b'i' | b'u' if matches!(itemsize, 1 | 2 | 4 | 8) => {
            let v = as_int(value)?;
            let bits = 8 * itemsize as u32;
            let (lo, hi) = if kind == b'i' {
                (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
            } else {
                (0, (1i128 << bits) - 1)
            };
            if v < lo || v > hi {
                return Err(PadError::OutOfRange);
            }
            // Two's complement: the low `itemsize` bytes of the i128 are the element.
            let le = v.to_le_bytes();
            let mut bytes = le[..itemsize].to_vec();
            if cfg!(target_endian = "big") {
                bytes.reverse();
            }
            (bytes, itemsize)
        }
        b'f' if matches!(itemsize, 2 | 4 | 8) => (float_bytes(as_real(value)?, itemsize), itemsize),
        b'c' if matches!(itemsize, 8 | 16) => {
            let (re, im) = match value {
                PadValue::Complex(re, im) => (re, im),
                other => (as_real(other)?, 0.0),
            };
            let mut bytes = float_bytes(re, itemsize / 2);
            bytes.extend(float_bytes(im, itemsize / 2));
            (bytes, itemsize / 2)
        }
        _ => return Err(PadError::UnsupportedDtype),
    };
    if swap {
        for part in bytes.chunks_exact_mut(component) {
            part.reverse();
        }
    }
    Ok(bytes)
}

fn float_bytes(v: f64, size: usize) -> Vec<u8> {
    match size {
        2 => half::f16::from_f64(v).to_ne_bytes().to_vec(),
        4 => (v as f32).to_ne_bytes().to_vec(),
        8 => v.to_ne_bytes().to_vec(),
        _ => unreachable!("float size checked by the caller"),
    }
}

fn as_real(value: PadValue) -> Result<f64, PadError> {
    match value {
        PadValue::Bool(b) => Ok(f64::from(u8::from(b))),
        PadValue::Int(i) => Ok(i as f64),
        PadValue::Float(f) => Ok(f),
        PadValue::Complex(re, 0.0) => Ok(re),
        PadValue::Complex(..) => Err(PadError::Inexact),
    }
}

fn as_int(value: PadValue) -> Result<i128, PadError> {
    match value {
        PadValue::Bool(b) => Ok(i128::from(b)),
        PadValue::Int(i) => Ok(i),
        other => {
            let f = as_real(other)?;
            if !f.is_finite() || f.fract() != 0.0 {
                return Err(PadError::Inexact);
            }
            Ok(f as i128) // saturates beyond i128, far outside every dtype's range
        }
    }
}

fn as_bool(value: PadValue) -> Result<bool, PadError> {
    match as_int(value)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(PadError::OutOfRange),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A strided view of `bytes` (elements of `itemsize` bytes) as numpy would describe it.
    fn strided<'a>(
        bytes: &'a [u8],
        offset: usize,
        shape: &[usize],
        strides: &[isize],
        itemsize: usize,
    ) -> Source<'a> {
        Source::Strided(Strided {
            bytes,
            offset,
            shape: shape.to_vec(),
            strides: strides.to_vec(),
            itemsize,
        })
    }

    fn iota(n: usize) -> Vec<u8> {
        (0..n).map(|i| i as u8).collect()
    }

    #[test]
    fn stack_contiguous_items_back_to_back() {
        let (a, b, c) = ([1u8, 2, 3], [4u8, 5, 6], [7u8, 8, 9]);
        let items = [
            Source::Contiguous(&a),
            Source::Contiguous(&b),
            Source::Contiguous(&c),
        ];
        let mut out = [0u8; 9];
        stack_into(&items, &mut out);
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn streaming_copy_writes_every_byte_at_any_alignment() {
        let src: Vec<u8> = (0..400usize).map(|i| (i * 7 + 3) as u8).collect();
        for offset in 0..17 {
            for len in [
                0,
                1,
                15,
                16,
                17,
                63,
                64,
                65,
                127,
                128,
                129,
                200,
                383 - offset,
            ] {
                let mut buf = vec![0xEEu8; 400];
                copy_streaming(&mut buf[offset..offset + len], &src[..len]);
                store_fence();
                assert_eq!(
                    &buf[offset..offset + len],
                    &src[..len],
                    "offset {offset} len {len}"
                );
                assert!(
                    buf[..offset].iter().all(|&b| b == 0xEE),
                    "before, offset {offset} len {len}"
                );
                assert!(
                    buf[offset + len..].iter().all(|&b| b == 0xEE),
                    "after, offset {offset} len {len}"
                );
            }
        }
    }

    #[test]
    fn a_batch_past_the_streaming_size_is_the_same_batch() {
        // Items of an odd size, so that slots start at every alignment; the batch is
        // over STREAM_MIN_BYTES, on one thread and on several.
        let item = 1_000_003usize;
        let n = STREAM_MIN_BYTES / item + 2;
        let data: Vec<Vec<u8>> = (0..n)
            .map(|i| (0..item).map(|j| (i * 31 + j) as u8).collect())
            .collect();
        let items: Vec<Source<'_>> = data.iter().map(|d| Source::Contiguous(d)).collect();
        let want: Vec<u8> = data.concat();
        assert!(want.len() >= STREAM_MIN_BYTES);
        let mut one = vec![0u8; want.len()];
        stack_into(&items, &mut one);
        assert!(one == want);
        for threads in [2, 3] {
            let mut many = vec![0u8; want.len()];
            stack_into_threads(&items, &mut many, threads);
            assert!(many == want, "threads={threads}");
        }
    }

    #[test]
    fn stack_on_threads_matches_one_thread() {
        let data: Vec<Vec<u8>> = (0..7u8).map(|i| vec![i; 1000]).collect();
        let items: Vec<Source<'_>> = data.iter().map(|d| Source::Contiguous(d)).collect();
        let mut one = vec![0u8; 7000];
        stack_into(&items, &mut one);
        for threads in [2, 3, 4, 7, 16] {
            let mut many = vec![9u8; 7000];
            stack_into_threads(&items, &mut many, threads);
            assert_eq!(one, many, "threads={threads}");
        }
        let lengths: Vec<usize> = (0..7).map(|i| i * 10).collect();
        let short: Vec<Vec<u8>> = lengths.iter().map(|&l| vec![l as u8 + 1; l]).collect();
        let items: Vec<Source<'_>> = short.iter().map(|d| Source::Contiguous(d)).collect();
        let mut one = vec![0u8; 7 * 64];
        pad_stack_into(&items, &lengths, 1, 64, &[0xAB], &mut one);
        for threads in [2, 3, 8] {
            let mut many = vec![1u8; 7 * 64];
            pad_stack_into_threads(&items, &lengths, 1, 64, &[0xAB], &mut many, threads);
            assert_eq!(one, many, "threads={threads}");
        }
        assert_eq!(auto_threads(0), 1);
        assert!(auto_threads(usize::MAX / 2) <= MAX_THREADS);
    }

    #[test]
    fn stack_overwrites_a_reused_buffer() {
        let a = [1u8; 4];
        let mut out = [0xAAu8; 8];
        stack_into(&[Source::Contiguous(&a), Source::Contiguous(&a)], &mut out);
        assert_eq!(out, [1u8; 8]);
    }

    #[test]
    fn stack_of_empty_items_and_empty_batch() {
        let mut out: [u8; 0] = [];
        stack_into(
            &[Source::Contiguous(&[]), Source::Contiguous(&[])],
            &mut out,
        );
        stack_into(&[], &mut out);
    }

    #[test]
    #[should_panic(expected = "destination size")]
    fn stack_rejects_unequal_items() {
        let mut out = [0u8; 4];
        stack_into(
            &[Source::Contiguous(&[1, 2, 3]), Source::Contiguous(&[4])],
            &mut out,
        );
    }

    #[test]
    fn byte_span_of_common_layouts() {
        // C-contiguous (2, 3) of 4-byte items.
        assert_eq!(byte_span(&[2, 3], &[12, 4], 4), Some((0, 24)));
        // Its transpose.
        assert_eq!(byte_span(&[3, 2], &[4, 12], 4), Some((0, 24)));
        // Reversed rows: a[::-1] of a (2, 3) array, data pointing at the last row.
        assert_eq!(byte_span(&[2, 3], &[-12, 4], 4), Some((-12, 24)));
        // Every other column.
        assert_eq!(byte_span(&[2, 2], &[12, 8], 4), Some((0, 24)));
        // Broadcast (stride 0).
        assert_eq!(byte_span(&[5, 3], &[0, 4], 4), Some((0, 12)));
        // 0-d.
        assert_eq!(byte_span(&[], &[], 8), Some((0, 8)));
        // Empty.
        assert_eq!(byte_span(&[2, 0], &[0, 4], 4), None);
        assert_eq!(byte_span(&[2], &[0], 0), None);
    }

    #[test]
    fn strided_transpose_is_gathered_in_c_order() {
        // A (2, 3) array of u16 [[0, 1, 2], [3, 4, 5]], viewed transposed as (3, 2).
        let values: Vec<u16> = (0..6).collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let source = strided(&bytes, 0, &[3, 2], &[2, 6], 2);
        let mut out = vec![0u8; 12];
        source.copy_to(&mut out);
        let got: Vec<u16> = out
            .chunks_exact(2)
            .map(|c| u16::from_ne_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(got, [0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn strided_negative_strides_and_offset() {
        // (2, 3) bytes [[0, 1, 2], [3, 4, 5]] reversed on both axes: a[::-1, ::-1].
        let bytes = iota(6);
        let (start, len) = byte_span(&[2, 3], &[-3, -1], 1).unwrap();
        assert_eq!((start, len), (-5, 6));
        let source = strided(&bytes, 5, &[2, 3], &[-3, -1], 1);
        let mut out = vec![0u8; 6];
        source.copy_to(&mut out);
        assert_eq!(out, [5, 4, 3, 2, 1, 0]);
    }

    #[test]
    fn strided_contiguous_inner_axes_fold_into_runs() {
        // (4, 3, 2) contiguous bytes, sliced as a[::2]: shape (2, 3, 2), strides (12, 2, 1).
        let bytes = iota(24);
        let source = strided(&bytes[..18], 0, &[2, 3, 2], &[12, 2, 1], 1);
        let mut out = vec![0u8; 12];
        source.copy_to(&mut out);
        assert_eq!(out, [0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16, 17]);
    }

    #[test]
    fn strided_broadcast_and_unit_axes() {
        let bytes = [7u8, 8];
        // np.broadcast_to([7, 8], (3, 1, 2)): strides (0, whatever, 1).
        let source = strided(&bytes, 0, &[3, 1, 2], &[0, 99, 1], 1);
        let mut out = vec![0u8; 6];
        source.copy_to(&mut out);
        assert_eq!(out, [7, 8, 7, 8, 7, 8]);
    }

    #[test]
    fn strided_odd_item_sizes() {
        // Every other 3-byte element of 4 elements.
        let bytes = iota(12);
        let source = strided(&bytes, 0, &[2], &[6], 3);
        let mut out = vec![0u8; 6];
        source.copy_to(&mut out);
        assert_eq!(out, [0, 1, 2, 6, 7, 8]);
    }

    #[test]
    fn strided_zero_d() {
        let bytes = [1u8, 2, 3, 4];
        let source = strided(&bytes, 0, &[], &[], 4);
        let mut out = vec![0u8; 4];
        source.copy_to(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    #[should_panic]
    fn strided_out_of_bounds_panics_instead_of_reading() {
        let bytes = iota(4);
        let source = strided(&bytes, 0, &[2], &[4], 1); // element 1 at byte 4: past the end
        let mut out = vec![0u8; 2];
        source.copy_to(&mut out);
    }

    #[test]
    fn stack_mixes_contiguous_and_strided() {
        let a = [1u8, 2, 3, 4];
        let b = iota(8); // every other byte: 0, 2, 4, 6
        let items = [Source::Contiguous(&a), strided(&b[..7], 0, &[4], &[2], 1)];
        let mut out = [0u8; 8];
        stack_into(&items, &mut out);
        assert_eq!(out, [1, 2, 3, 4, 0, 2, 4, 6]);
    }

    #[test]
    fn pad_stack_pads_each_slot() {
        // Rows of 2 bytes; lengths 1, 3, 0; max_len 3; pad element 0xFF.
        let (a, b) = ([1u8, 1], [2u8, 2, 3, 3, 4, 4]);
        let items = [
            Source::Contiguous(&a),
            Source::Contiguous(&b),
            Source::Contiguous(&[]),
        ];
        let mut out = [0u8; 18];
        pad_stack_into(&items, &[1, 3, 0], 2, 3, &[0xFF], &mut out);
        assert_eq!(
            out,
            [1, 1, 0xFF, 0xFF, 0xFF, 0xFF, 2, 2, 3, 3, 4, 4, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
        );
    }

    #[test]
    fn pad_stack_multi_byte_pad_and_pad_to() {
        // u16 items, row = 1 element; lengths 1, 2; max_len 4; pad 0x0102.
        let pad = 0x0102u16.to_ne_bytes();
        let a = 7u16.to_ne_bytes();
        let b: Vec<u8> = [8u16, 9].iter().flat_map(|v| v.to_ne_bytes()).collect();
        let mut out = vec![0u8; 16];
        pad_stack_into(
            &[Source::Contiguous(&a), Source::Contiguous(&b)],
            &[1, 2],
            2,
            4,
            &pad,
            &mut out,
        );
        let got: Vec<u16> = out
            .chunks_exact(2)
            .map(|c| u16::from_ne_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(got, [7, 0x0102, 0x0102, 0x0102, 8, 9, 0x0102, 0x0102]);
    }

    #[test]
    fn pad_stack_of_strided_items() {
        // Item: rows 0 and 2 of a (3, 2) byte array; row_bytes 2; max_len 3.
        let bytes = iota(6);
        let item = strided(&bytes, 0, &[2, 2], &[4, 1], 1);
        let mut out = vec![9u8; 6];
        pad_stack_into(&[item], &[2], 2, 3, &[0], &mut out);
        assert_eq!(out, [0, 1, 4, 5, 0, 0]);
    }

    #[test]
    #[should_panic(expected = "above max_len")]
    fn pad_stack_rejects_lengths_above_max() {
        let mut out = [0u8; 2];
        pad_stack_into(
            &[Source::Contiguous(&[1, 2, 3])],
            &[3],
            1,
            2,
            &[0],
            &mut out[..2],
        );
    }

    #[test]
    fn pad_elements_of_integer_dtypes() {
        assert_eq!(
            pad_element(b'i', 1, PadValue::Int(-1), false),
            Ok(vec![0xFF])
        );
        assert_eq!(
            pad_element(b'u', 2, PadValue::Int(258), false),
            Ok(258u16.to_ne_bytes().to_vec())
        );
        assert_eq!(
            pad_element(b'i', 8, PadValue::Int(i64::MIN as i128), false),
            Ok(i64::MIN.to_ne_bytes().to_vec())
        );
        assert_eq!(
            pad_element(b'u', 8, PadValue::Int(u64::MAX as i128), false),
            Ok(u64::MAX.to_ne_bytes().to_vec())
        );
        assert_eq!(
            pad_element(b'i', 4, PadValue::Bool(true), false),
            Ok(1i32.to_ne_bytes().to_vec())
        );
        assert_eq!(
            pad_element(b'i', 4, PadValue::Float(-3.0), false),
            Ok((-3i32).to_ne_bytes().to_vec())
        );
        assert_eq!(
            pad_element(b'i', 4, PadValue::Complex(2.0, 0.0), false),
            Ok(2i32.to_ne_bytes().to_vec())
        );
    }

    #[test]
    fn pad_elements_out_of_range_or_inexact() {
        assert_eq!(
            pad_element(b'u', 1, PadValue::Int(256), false),
            Err(PadError::OutOfRange)
        );
        assert_eq!(
            pad_element(b'u', 1, PadValue::Int(-1), false),
            Err(PadError::OutOfRange)
        );
        assert_eq!(
            pad_element(b'i', 1, PadValue::Int(128), false),
            Err(PadError::OutOfRange)
        );
        assert_eq!(
            pad_element(b'i', 8, PadValue::Int(1i128 << 63), false),
            Err(PadError::OutOfRange)
        );
        assert_eq!(
            pad_element(b'i', 4, PadValue::Float(0.5), false),
            Err(PadError::Inexact)
        );
        assert_eq!(
            pad_element(b'i', 4, PadValue::Float(f64::NAN), false),
            Err(PadError::Inexact)
        );
        assert_eq!(
            pad_element(b'i', 4, PadValue::Complex(1.0, 1.0), false),
            Err(PadError::Inexact)
        );
        assert_eq!(
            pad_element(b'f', 4, PadValue::Complex(1.0, 1.0), false),
            Err(PadError::Inexact)
        );
        assert_eq!(
            pad_element(b'i', 4, PadValue::Float(1e300), false),
            Err(PadError::OutOfRange)
        );
    }

    #[test]
    fn pad_elements_of_bool() {
        assert_eq!(
            pad_element(b'b', 1, PadValue::Bool(true), false),
            Ok(vec![1])
        );
        assert_eq!(pad_element(b'b', 1, PadValue::Int(0), false), Ok(vec![0]));
        assert_eq!(
            pad_element(b'b', 1, PadValue::Int(2), false),
            Err(PadError::OutOfRange)
        );
        assert_eq!(
            pad_element(b'b', 1, PadValue::Float(0.5), false),
            Err(PadError::Inexact)
        );
    }

    #[test]
    fn pad_elements_of_float_and_complex() {
        assert_eq!(
            pad_element(b'f', 8, PadValue::Float(-1.5), false),
            Ok((-1.5f64).to_ne_bytes().to_vec())
        );
        assert_eq!(
            pad_element(b'f', 4, PadValue::Int(3), false),
            Ok(3f32.to_ne_bytes().to_vec())
        );
        assert_eq!(
            pad_element(b'f', 2, PadValue::Float(1.0), false),
            Ok(0x3C00u16.to_ne_bytes().to_vec())
        );
        assert_eq!(
            pad_element(b'f', 2, PadValue::Float(1e6), false),
            Ok(0x7C00u16.to_ne_bytes().to_vec())
        );
        let mut c64 = 1f32.to_ne_bytes().to_vec();
        c64.extend(2f32.to_ne_bytes());
        assert_eq!(
            pad_element(b'c', 8, PadValue::Complex(1.0, 2.0), false),
            Ok(c64)
        );
        let mut c128 = 5f64.to_ne_bytes().to_vec();
        c128.extend(0f64.to_ne_bytes());
        assert_eq!(pad_element(b'c', 16, PadValue::Int(5), false), Ok(c128));
    }

    #[test]
    fn pad_elements_byte_swapped() {
        assert_eq!(
            pad_element(b'i', 4, PadValue::Int(1), true),
            Ok(1i32.to_ne_bytes().iter().rev().copied().collect())
        );
        let mut c64: Vec<u8> = 1f32.to_ne_bytes().iter().rev().copied().collect();
        c64.extend(2f32.to_ne_bytes().iter().rev());
        assert_eq!(
            pad_element(b'c', 8, PadValue::Complex(1.0, 2.0), true),
            Ok(c64)
        );
    }

    #[test]
    fn pad_elements_of_unsupported_dtypes() {
        assert_eq!(
            pad_element(b'f', 16, PadValue::Int(0), false),
            Err(PadError::UnsupportedDtype)
        ); // longdouble
        assert_eq!(
            pad_element(b'U', 4, PadValue::Int(0), false),
            Err(PadError::UnsupportedDtype)
        );
        assert_eq!(
            pad_element(b'M', 8, PadValue::Int(0), false),
            Err(PadError::UnsupportedDtype)
        );
        assert_eq!(
            pad_element(b'i', 3, PadValue::Int(0), false),
            Err(PadError::UnsupportedDtype)
        );
    }
}
