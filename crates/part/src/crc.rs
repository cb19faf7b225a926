//! CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320) as GPT headers and arrays use it:
//! crc32fast's (carry-less multiply where the CPU has it), see docs/crates.md.

/// The CRC-32 of `data` (public for tests that forge tables).
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_value() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
    }
}
