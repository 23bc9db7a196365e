//! XXH64, the hash Envoy uses for hash policies, ring-hash points and Maglev permutations.
//! Using the same function (seed 0) keeps our request hashes and host placement comparable
//! with Envoy's for the same keys.

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

/// XXH64 of `data` with `seed`.
pub fn xxhash64(data: &[u8], seed: u64) -> u64 {
    let len = data.len() as u64;
    let mut rest = data;
    let mut h = if rest.len() >= 32 {
        let mut acc = [
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ];
        while rest.len() >= 32 {
            for (i, a) in acc.iter_mut().enumerate() {
                *a = round(*a, read_u64(&rest[i * 8..]));
            }
            rest = &rest[32..];
        }
        let mut h = acc[0]
            .rotate_left(1)
            .wrapping_add(acc[1].rotate_left(7))
            .wrapping_add(acc[2].rotate_left(12))
            .wrapping_add(acc[3].rotate_left(18));
        for a in acc {
            h = (h ^ round(0, a)).wrapping_mul(P1).wrapping_add(P4);
        }
        h
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(len);
    while rest.len() >= 8 {
        h ^= round(0, read_u64(rest));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        rest = &rest[8..];
    }
    if rest.len() >= 4 {
        h ^= u64::from(read_u32(rest)).wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = &rest[4..];
    }
    for &b in rest {
        h ^= u64::from(b).wrapping_mul(P5);
        h = h.rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

/// Envoy's hash of a list of strings: each element hashed with the previous result as seed.
pub fn xxhash64_chain<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    parts.into_iter().fold(0, |seed, part| xxhash64(part, seed))
}

fn round(acc: u64, lane: u64) -> u64 {
    acc.wrapping_add(lane.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

// Callers guarantee the length; the fallbacks only keep this panic-free.
fn read_u64(b: &[u8]) -> u64 {
    b.first_chunk::<8>().map_or(0, |c| u64::from_le_bytes(*c))
}

fn read_u32(b: &[u8]) -> u32 {
    b.first_chunk::<4>().map_or(0, |c| u32::from_le_bytes(*c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_vectors() {
        assert_eq!(xxhash64(b"", 0), 0xEF46_DB37_51D8_E999);
        assert_eq!(xxhash64(b"a", 0), 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(xxhash64(b"abc", 0), 0x44BC_2CF5_AD77_0999);
    }

    /// The low 32 bits of XXH64 (seed 0) are what zstd writes as a frame's content checksum;
    /// these were taken from `zstd` output so every code path (lanes, 8/4/1-byte tails) is
    /// checked against an independent implementation.
    #[test]
    fn matches_zstd_checksums() {
        for (input, low32) in ZSTD_CHECKSUMS {
            assert_eq!(xxhash64(input.as_bytes(), 0) as u32, *low32, "{input:?}");
        }
    }

    const ZSTD_CHECKSUMS: &[(&str, u32)] = &[
        ("", 0x51D8_E999),
        ("a", 0xA98C_6E5B),
        ("abc", 0xAD77_0999),
        ("hello world", 0xB21E_6968),
        ("10.0.0.1:8080_0", 0x75DF_D4A3),
        ("abcdefgh12345", 0x655D_546E),
        ("0123456789abcdefghijklmnopqrstuvwxyz", 0x3AF0_BFF9),
        (
            "The quick brown fox jumps over the lazy dog, twice: the quick brown fox!",
            0xDC45_53E5,
        ),
    ];
}
