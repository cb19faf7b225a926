//! ASN.1 DER elements, read with every length checked: the public keys of `--verify-key`
//! (crates/oci `sigstore`) and the Authenticode signatures of EFI binaries (crates/bootloader
//! `authenticode`).

/// SEQUENCE (constructed).
pub const SEQUENCE: u8 = 0x30;
/// SET (constructed).
pub const SET: u8 = 0x31;
/// OBJECT IDENTIFIER.
pub const OID: u8 = 0x06;
/// INTEGER.
pub const INTEGER: u8 = 0x02;
/// BIT STRING.
pub const BIT_STRING: u8 = 0x03;
/// OCTET STRING.
pub const OCTET_STRING: u8 = 0x04;
/// Context-specific constructed tag `[0]` (EXPLICIT, or IMPLICIT over a constructed type).
pub const CONTEXT_0: u8 = 0xa0;

/// One DER element of `input`: its tag, contents and what follows. Lengths in short
/// form or long form of at most 4 bytes, each checked against what is left.
pub fn element(input: &[u8]) -> Result<(u8, &[u8], &[u8]), &'static str> {
    let (&tag, rest) = input.split_first().ok_or("truncated")?;
    let (&first, mut rest) = rest.split_first().ok_or("truncated length")?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err("bad length");
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = len.checked_mul(256).and_then(|l| l.checked_add(usize::from(b))).ok_or("bad length")?;
        }
        rest = &rest[n..];
        len
    };
    if len > rest.len() {
        return Err("length past the end");
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// The contents of the element of `tag` at the start of `input`, and what follows; `what`
/// is the error when the tag differs.
pub fn expect<'a>(input: &'a [u8], tag: u8, what: &'static str) -> Result<(&'a [u8], &'a [u8]), &'static str> {
    let (t, body, rest) = element(input)?;
    if t != tag {
        return Err(what);
    }
    Ok((body, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_bounded() {
        assert_eq!(element(&[0x30]).unwrap_err(), "truncated length");
        assert_eq!(element(&[0x30, 0x05, 1, 2]).unwrap_err(), "length past the end");
        assert_eq!(element(&[0x30, 0x85, 1, 1, 1, 1, 1]).unwrap_err(), "bad length");
        assert_eq!(element(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).unwrap_err(), "length past the end");
        assert_eq!(element(&[0x30, 0x81, 0x01, 7, 9]).unwrap(), (0x30, &[7u8][..], &[9u8][..]));
        assert_eq!(expect(&[0x02, 0x01, 5], SEQUENCE, "not a sequence"), Err("not a sequence"));
    }
}
