//! CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320) as GPT headers and arrays use it.

const fn table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    // `n` is `i` as a u32 (a const fn cannot call the conversions).
    let mut n = 0u32;
    while i < 256 {
        let mut c = n;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
        n += 1;
    }
    t
}

static TABLE: [u32; 256] = table();

/// The CRC-32 of `data` (public for tests that forge tables).
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = TABLE[usize::from(diskcast_layout::low_u8(u64::from(c ^ u32::from(b))))] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_value() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
    }
}
