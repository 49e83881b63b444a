//! The random part of the ids and tokens the simulator hands out.

use rand::Rng;

/// `len` random ASCII letters and digits, the body of Persona's ids and tokens.
pub fn random_alnum(len: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}
