//! Deciding cheaply that a block is not worth compressing.
//!
//! Disks hold much data that is already compressed or encrypted (packages, media, swap of
//! encrypted volumes). Deflate spends about as long failing on such a block as succeeding
//! on text, and formats then store the block uncompressed anyway (qcow2 and VMDK keep a
//! cluster raw when compression does not make it smaller). A byte histogram costs a few
//! microseconds per 64 KiB and tells random-looking data apart; a check for repeated
//! aligned blocks keeps the one kind of high-entropy data that LZ77 does shrink (a random
//! block written several times).

/// Blocks below this size give a biased entropy estimate (too few samples per byte
/// value), so they are always compressed.
const MIN_SAMPLE: usize = 16 * 1024;
/// Order-0 entropy, in bits per byte, above which a block is taken as incompressible.
/// Uniform random data measures about 7.997 on 64 KiB; deflate's Huffman stage cannot
/// save more than `8 - entropy` bits per byte, under 0.4 % at this threshold.
const ENTROPY_THRESHOLD: f64 = 7.97;
/// Granularity of the repeat check: a block repeated at this alignment is LZ77 food.
const REPEAT_BLOCK: usize = 256;

/// True when compressing `data` would almost surely not make it smaller.
#[expect(clippy::as_conversions, reason = "an entropy estimate: f64 has no lossless From<usize>")]
pub fn looks_incompressible(data: &[u8]) -> bool {
    if data.len() < MIN_SAMPLE {
        return false;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        counts[usize::from(b)] += 1;
    }
    let n = data.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    entropy >= ENTROPY_THRESHOLD && !has_repeated_blocks(data)
}

/// True when two aligned [`REPEAT_BLOCK`]-byte blocks of `data` are equal.
fn has_repeated_blocks(data: &[u8]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(data.len() / REPEAT_BLOCK);
    data.chunks_exact(REPEAT_BLOCK).any(|block| !seen.insert(block))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn random_data_is_incompressible() {
        assert!(looks_incompressible(&random(64 << 10, 7)));
        assert!(looks_incompressible(&random(2 << 20, 9)));
    }

    #[test]
    fn text_zeros_and_small_blocks_are_compressed() {
        let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog 0123456789\n"
            .iter()
            .copied()
            .cycle()
            .take(64 << 10)
            .collect();
        assert!(!looks_incompressible(&text));
        assert!(!looks_incompressible(&vec![0u8; 64 << 10]));
        assert!(!looks_incompressible(&random(4096, 3)), "too small to judge");
    }

    #[test]
    fn repeated_random_blocks_are_compressed() {
        let block = random(4096, 11);
        let data: Vec<u8> = block.iter().copied().cycle().take(64 << 10).collect();
        assert!(!looks_incompressible(&data));
    }

    #[test]
    fn the_verdict_agrees_with_deflate() {
        use std::io::Write;
        let deflated = |data: &[u8]| {
            let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(data).unwrap();
            enc.finish().unwrap().len()
        };
        // Random blocks must be called incompressible, and deflate must agree (it cannot
        // shrink them by 1 %); every block with something for LZ77 or Huffman to use
        // must be compressed, and deflate must shrink it by at least a tenth.
        let mut half_zero = random(64 << 10, 5);
        half_zero[32 << 10..].fill(0);
        let mut skewed = random(64 << 10, 6);
        skewed.iter_mut().for_each(|b| *b &= 0x3f);
        let repeated: Vec<u8> = random(4096, 11).iter().copied().cycle().take(64 << 10).collect();
        let mut cases: Vec<(Vec<u8>, bool)> = (1..20).map(|seed| (random(64 << 10, seed), true)).collect();
        cases.extend([(half_zero, false), (skewed, false), (repeated, false)]);
        for (i, (data, incompressible)) in cases.iter().enumerate() {
            assert_eq!(looks_incompressible(data), *incompressible, "case {i}");
            let out = deflated(data);
            if *incompressible {
                assert!(out * 100 >= data.len() * 99, "case {i}: deflate shrank it to {out}");
            } else {
                assert!(out * 10 <= data.len() * 9, "case {i}: deflate only got it to {out}");
            }
        }
    }
}
