//! Mutation of valid inputs, for fuzzing sans-IO parsers past their first checks.
//!
//! Random bytes rarely get past a parser's header checks; a valid message with a few bytes
//! changed does. [`mutate`] applies a list of [`Edit`]s to a seed; a property test draws the
//! edits with `any::<Edit>()`-like tuples (so proptest shrinks them), a long campaign by hand
//! draws them from [`Rng`], a xorshift generator with a printed seed, so a failure is replayed.

/// What one edit does; the numbers are reduced to the input's length where they are positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // each variant's line says what its fields are
pub enum Edit {
    /// Flip bit `bit % 8` of the byte at `at`.
    Flip { at: usize, bit: u8 },
    /// Overwrite the byte at `at` with a boundary value (0, 0xff, 0x7f, 0x80, 0xc0, 1...).
    Boundary { at: usize, which: u8 },
    /// Overwrite the byte at `at` with `value`.
    Set { at: usize, value: u8 },
    /// Add `delta` to the big-endian 16-bit field at `at` (lengths, counts, pointers).
    Add16 { at: usize, delta: i16 },
    /// Cut the input to `at` bytes.
    Truncate { at: usize },
    /// Insert `len % 8 + 1` copies of `value` at `at`.
    Insert { at: usize, value: u8, len: u8 },
    /// Remove up to `len` bytes at `at`.
    Remove { at: usize, len: u8 },
    /// Copy `len` bytes from `from` and insert them at `at` (a duplicated section).
    Duplicate { from: usize, len: u8, at: usize },
    /// Insert `len` bytes of `other` from `from` at `at` (a splice of another valid input).
    Splice { from: usize, len: u8, at: usize },
}

/// The boundary values [`Edit::Boundary`] picks from: length and count extremes, and the
/// top bits a DNS length byte uses for compression pointers.
pub const BOUNDARY: [u8; 12] = [
    0x00,
    0x01,
    0x02,
    0x3f,
    0x40,
    0x7f,
    0x80,
    0xc0,
    0xc0 | 0x0c,
    0xfe,
    0xff,
    b'\n',
];

/// `seed` with `edits` applied in turn; `other` is what [`Edit::Splice`] takes bytes from.
pub fn mutate(seed: &[u8], edits: &[Edit], other: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for e in edits {
        let pos = |at: usize, n: usize| if n == 0 { 0 } else { at % n };
        match *e {
            Edit::Flip { at, bit } => {
                if !b.is_empty() {
                    let i = pos(at, b.len());
                    b[i] ^= 1 << (bit % 8);
                }
            }
            Edit::Boundary { at, which } => {
                if !b.is_empty() {
                    let i = pos(at, b.len());
                    b[i] = BOUNDARY[usize::from(which) % BOUNDARY.len()];
                }
            }
            Edit::Set { at, value } => {
                if !b.is_empty() {
                    let i = pos(at, b.len());
                    b[i] = value;
                }
            }
            Edit::Add16 { at, delta } => {
                if b.len() >= 2 {
                    let i = pos(at, b.len() - 1);
                    let v = u16::from_be_bytes([b[i], b[i + 1]]).wrapping_add_signed(delta);
                    b[i..i + 2].copy_from_slice(&v.to_be_bytes());
                }
            }
            Edit::Truncate { at } => b.truncate(pos(at, b.len() + 1)),
            Edit::Insert { at, value, len } => {
                let i = pos(at, b.len() + 1);
                let n = usize::from(len % 8) + 1;
                b.splice(i..i, std::iter::repeat_n(value, n));
            }
            Edit::Remove { at, len } => {
                let i = pos(at, b.len() + 1);
                let end = (i + usize::from(len)).min(b.len());
                b.drain(i..end);
            }
            Edit::Duplicate { from, len, at } => {
                let i = pos(from, b.len() + 1);
                let end = (i + usize::from(len)).min(b.len());
                let copy = b[i..end].to_vec();
                let j = pos(at, b.len() + 1);
                b.splice(j..j, copy);
            }
            Edit::Splice { from, len, at } => {
                let i = pos(from, other.len() + 1);
                let end = (i + usize::from(len)).min(other.len());
                let j = pos(at, b.len() + 1);
                b.splice(j..j, other[i..end].iter().copied());
            }
        }
    }
    b
}

/// A proptest strategy for 1 to `most - 1` edits built by [`edit`], shrinkable (the
/// `proptest` feature, which the plugins' property tests turn on).
#[cfg(feature = "proptest")]
pub fn edits(most: usize) -> impl proptest::strategy::Strategy<Value = Vec<Edit>> {
    use proptest::prelude::*;
    proptest::collection::vec(
        (
            any::<u8>(),
            any::<usize>(),
            any::<usize>(),
            any::<u8>(),
            0u8..24,
        ),
        1..most,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(k, at, from, value, len)| edit(k, at, from, value, len))
            .collect()
    })
}

/// Builds an [`Edit`] from plain numbers (what a property test draws): `kind` picks the edit.
pub fn edit(kind: u8, at: usize, from: usize, value: u8, len: u8) -> Edit {
    match kind % 16 {
        0..=2 => Edit::Flip { at, bit: value },
        3..=5 => Edit::Boundary { at, which: value },
        6 => Edit::Set { at, value },
        7 | 8 => Edit::Add16 {
            at,
            delta: i16::from(value as i8),
        },
        9 => Edit::Truncate { at },
        10 => Edit::Insert { at, value, len },
        11 => Edit::Remove { at, len },
        12 | 13 => Edit::Duplicate { from, len, at },
        _ => Edit::Splice { from, len, at },
    }
}

/// xorshift64*: cheap, deterministic, good enough to pick edits.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced: xorshift's state must not be zero).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// A seed from the clock, or `FUZZ_SEED` if set (to replay a run).
    pub fn seed_from_env() -> u64 {
        std::env::var("FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            })
    }

    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 if `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// One random edit.
    pub fn edit(&mut self) -> Edit {
        let r = self.next_u64();
        let (kind, value, len) = (r as u8, (r >> 8) as u8, (r >> 16) as u8);
        // Short lengths mostly: a field, a label, a record.
        let len = if len & 0x80 != 0 { len } else { len % 24 };
        edit(
            kind,
            self.next_u64() as usize,
            self.next_u64() as usize,
            value,
            len,
        )
    }

    /// One to `max` random edits (few, mostly: one changed byte is the likeliest to get far).
    pub fn edits(&mut self, max: usize) -> Vec<Edit> {
        let n = 1 + self.below(max.max(1)).min(self.below(max.max(1)));
        (0..n).map(|_| self.edit()).collect()
    }
}

/// A campaign by hand: runs `one` with the same generator until `FUZZ_SECS` (60 by default)
/// have passed, and panics naming the seed and iteration to replay (`FUZZ_SEED`) when it
/// panics or returns an error; returns the iterations run.
pub fn campaign(name: &str, mut one: impl FnMut(&mut Rng) -> Result<(), String>) -> u64 {
    let secs = std::env::var("FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed = Rng::seed_from_env();
    let mut rng = Rng::new(seed);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut n = 0u64;
    eprintln!("{name}: FUZZ_SEED={seed}");
    while std::time::Instant::now() < end {
        for _ in 0..100 {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| one(&mut rng)));
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("{name}: FUZZ_SEED={seed}, iteration {n}: {e}"),
                Err(_) => panic!("{name}: FUZZ_SEED={seed}, iteration {n}: panicked"),
            }
            n += 1;
        }
    }
    eprintln!("{name}: {n} iterations in {secs} s, FUZZ_SEED={seed}");
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_stay_in_bounds_and_do_what_they_say() {
        let seed = b"\x00\x01abcdef";
        assert_eq!(
            mutate(seed, &[Edit::Flip { at: 2, bit: 0 }], b""),
            b"\x00\x01`bcdef"
        );
        assert_eq!(
            mutate(seed, &[Edit::Add16 { at: 0, delta: -2 }], b"")[..2],
            [0xff, 0xff]
        );
        assert_eq!(mutate(seed, &[Edit::Truncate { at: 3 }], b""), b"\x00\x01a");
        assert_eq!(
            mutate(
                b"ab",
                &[Edit::Splice {
                    from: 1,
                    len: 9,
                    at: 1
                }],
                b"xyz"
            ),
            b"ayzb"
        );
        assert_eq!(
            mutate(
                b"abc",
                &[Edit::Duplicate {
                    from: 0,
                    len: 2,
                    at: 3
                }],
                b""
            ),
            b"abcab"
        );
        let mut rng = Rng::new(7);
        for _ in 0..10_000 {
            let e = rng.edits(6);
            assert!(!e.is_empty() && e.len() <= 6);
            let _ = mutate(b"", &e, b"");
            let _ = mutate(seed, &e, b"");
        }
    }
}
