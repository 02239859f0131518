//! The CPU demo kernel: deliberately naive, recursive Fibonacci.

/// The largest `n` whose Fibonacci number fits in a signed 64-bit integer (an int64 in
/// numpy, a `long` in C): fib(93) does not.
pub const FIB_MAX_N: u64 = 92;

/// Recursive Fibonacci: `n` if `n < 2`, else `fib(n - 1) + fib(n - 2)`.
///
/// Exponential on purpose (about 1.6^n calls): it is the CPU-bound demo work of snake.
/// Callers keep `n <= FIB_MAX_N` (the `u64` itself overflows from fib(94) on).
pub fn fib(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fib_iter(n: u64) -> u128 {
        let (mut a, mut b) = (0u128, 1u128);
        for _ in 0..n {
            let next = a + b;
            a = b;
            b = next;
        }
        a
    }

    #[test]
    fn base_cases() {
        assert_eq!(fib(0), 0);
        assert_eq!(fib(1), 1);
        assert_eq!(fib(2), 1);
    }

    #[test]
    fn known_values() {
        assert_eq!(fib(10), 55);
        assert_eq!(fib(20), 6765);
        assert_eq!(fib(30), 832_040);
    }

    #[test]
    fn matches_iterative_definition() {
        for n in 0..=25 {
            assert_eq!(u128::from(fib(n)), fib_iter(n), "n={n}");
        }
    }

    #[test]
    fn max_n_is_the_last_that_fits() {
        assert_eq!(fib_iter(FIB_MAX_N), 7_540_113_804_746_346_429);
        assert!(fib_iter(FIB_MAX_N) <= i64::MAX as u128);
        assert!(
            fib_iter(FIB_MAX_N + 1) > i64::MAX as u128,
            "fib(93) must not fit in i64"
        );
    }
}
