//! MAGLEV: Google's consistent-hash lookup table, weighted as Envoy does.
//!
//! Each endpoint walks its own permutation of the table slots: `offset = XXH64(addr, 0) % M`,
//! `skip = XXH64(addr, 1) % (M - 1) + 1`, slot k = `(offset + k * skip) % M`; M is prime so
//! every permutation visits every slot. Endpoints take turns claiming their next free slot
//! until the table is full; an endpoint of weight w claims a slot on a w/max_weight share of
//! the turns, so table shares follow weights. Turns go in address order, which makes the
//! table independent of the order endpoints arrive in. A request goes to `table[hash % M]`.

use super::{Candidates, DEFAULT_MAGLEV_TABLE_SIZE, MAX_MAGLEV_TABLE_SIZE, Member, xxhash64};

/// Deterministic rehashes tried when a request's slot holds an excluded endpoint.
const REHASHES: u64 = 8;

pub(super) struct Table {
    slots: Box<[u32]>,
}

impl Table {
    /// `table_size` 0 means unset (65537). A size that is not prime is raised to the next
    /// prime (Envoy rejects it; the permutation needs a prime), and capped at 5000011.
    pub(super) fn new(members: &[Member], table_size: u64) -> Table {
        if members.is_empty() {
            return Table {
                slots: Box::default(),
            };
        }
        let size = match table_size {
            0 => DEFAULT_MAGLEV_TABLE_SIZE,
            s => next_prime(s.clamp(2, MAX_MAGLEV_TABLE_SIZE)),
        };

        struct Builder {
            index: u32,
            weight: u64,
            slot: u64,
            skip: u64,
            credit: u64,
        }
        let mut keyed: Vec<(String, &Member)> = members
            .iter()
            .map(|m| (m.endpoint.addr.to_string(), m))
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.index.cmp(&b.1.index)));
        let mut builders: Vec<Builder> = keyed
            .iter()
            .map(|(key, m)| Builder {
                index: m.index,
                weight: m.weight,
                slot: xxhash64(key.as_bytes(), 0) % size,
                skip: xxhash64(key.as_bytes(), 1) % (size - 1) + 1,
                credit: 0,
            })
            .collect();
        let max_weight = builders.iter().map(|b| b.weight).max().unwrap_or(1);

        const EMPTY: u32 = u32::MAX;
        let mut slots = vec![EMPTY; size as usize];
        let mut filled = 0u64;
        'fill: loop {
            for b in &mut builders {
                b.credit += b.weight;
                if b.credit < max_weight {
                    continue;
                }
                b.credit -= max_weight;
                // A full permutation always reaches a free slot while the table is not full.
                while slots[b.slot as usize] != EMPTY {
                    b.slot = (b.slot + b.skip) % size;
                }
                slots[b.slot as usize] = b.index;
                b.slot = (b.slot + b.skip) % size;
                filled += 1;
                if filled == size {
                    break 'fill;
                }
            }
        }
        Table {
            slots: slots.into_boxed_slice(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn pick(&self, hash: u64, c: &Candidates<'_>) -> Option<u32> {
        let n = self.slots.len() as u64;
        if n == 0 {
            return c.any_from(0);
        }
        let first = self.slots[(hash % n) as usize];
        if c.allows(first) {
            return Some(first);
        }
        // Rehashing keeps the retry's choice spread like a fresh request (a plain walk to the
        // next slot would pile every retry from one endpoint onto its neighbours).
        for attempt in 1..=REHASHES {
            let i = self.slots[(mix(hash, attempt) % n) as usize];
            if c.allows(i) {
                return Some(i);
            }
        }
        let start = (hash % n) as usize;
        (0..self.slots.len())
            .map(|k| self.slots[(start + k) % self.slots.len()])
            .find(|&i| c.allows(i))
            .or_else(|| c.any_from(0))
    }
}

/// splitmix64's finaliser over the hash and attempt number.
fn mix(hash: u64, attempt: u64) -> u64 {
    let mut z = hash ^ attempt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

fn next_prime(mut n: u64) -> u64 {
    while !is_prime(n) {
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_prime() {
        assert_eq!(next_prime(65537), 65537);
        assert_eq!(next_prime(65536), 65537);
        assert_eq!(next_prime(100), 101);
        assert_eq!(next_prime(2), 2);
        assert!(is_prime(MAX_MAGLEV_TABLE_SIZE));
        assert!(!is_prime(1));
        assert!(!is_prime(9));
    }
}
