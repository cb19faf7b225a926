//! Varints and the record format: a header of serial types, then the values.

/// One column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// NULL (also what an `INTEGER PRIMARY KEY` column stores: the value is the rowid).
    Null,
    /// An integer (serial types 1-6, 8 and 9).
    Int(i64),
    /// A float (serial type 7).
    Real(f64),
    /// Text in the database's encoding, undecoded.
    Text(Vec<u8>),
    /// A blob.
    Blob(Vec<u8>),
}

/// One table row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The rowid (the b-tree key).
    pub rowid: i64,
    /// The record's columns, in table order.
    pub values: Vec<Value>,
}

/// A SQLite varint at `pos`: up to 8 bytes of 7 bits (high bit: more follows), then a
/// 9th byte of 8 bits. Returns the value and the position after it.
pub(crate) fn varint(b: &[u8], pos: usize) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for i in 0..9 {
        let byte = *b.get(pos.checked_add(i)?)?;
        if i == 8 {
            return Some(((v << 8) | u64::from(byte), pos + 9));
        }
        v = (v << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Some((v, pos + i + 1));
        }
    }
    None
}

/// Decodes a record: header size, serial types, bodies; every length bounds-checked.
pub(crate) fn decode(p: &[u8]) -> Result<Vec<Value>, String> {
    let (hsize, mut at) = varint(p, 0).ok_or("truncated record header size")?;
    let hend = usize::try_from(hsize)
        .ok()
        .filter(|&h| h >= at && h <= p.len())
        .ok_or_else(|| format!("record header size {hsize} is outside the {}-byte payload", p.len()))?;
    let mut body = hend;
    let mut out = Vec::new();
    while at < hend {
        let (t, next) = varint(&p[..hend], at).ok_or("truncated serial type")?;
        at = next;
        let len: usize = match t {
            0 | 8 | 9 => 0,
            1..=4 => diskcast_layout::usize_from_u64(t, "serial type").map_err(|e| e.to_string())?,
            5 => 6,
            6 | 7 => 8,
            10 | 11 => return Err(format!("reserved serial type {t}")),
            n => usize::try_from((n - 12) / 2).map_err(|_| format!("serial type {n} is too large"))?,
        };
        let bytes = body
            .checked_add(len)
            .and_then(|end| p.get(body..end))
            .ok_or_else(|| format!("column {} ({len} bytes) runs past the {}-byte payload", out.len(), p.len()))?;
        body += len;
        let int = || {
            // Big-endian two's complement of 1..8 bytes, sign-extended.
            let mut v: i64 = if bytes[0] & 0x80 != 0 { -1 } else { 0 };
            for &b in bytes {
                v = (v << 8) | i64::from(b);
            }
            v
        };
        out.push(match t {
            0 => Value::Null,
            1..=6 => Value::Int(int()),
            7 => Value::Real(f64::from_bits(int().cast_unsigned())),
            8 => Value::Int(0),
            9 => Value::Int(1),
            n if n % 2 == 0 => Value::Blob(bytes.to_vec()),
            _ => Value::Text(bytes.to_vec()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        assert_eq!(varint(&[0x05], 0), Some((5, 1)));
        assert_eq!(varint(&[0x81, 0x00], 0), Some((128, 2)));
        assert_eq!(varint(&[0xff; 9], 0), Some((u64::MAX, 9)));
        assert_eq!(varint(&[0x81], 0), None);
    }

    #[test]
    fn records() {
        // header 5 bytes: NULL, int8, text "ab" (17), int 1 (9)
        let p = [5, 0, 1, 17, 9, 0xfe, b'a', b'b'];
        assert_eq!(decode(&p).unwrap(), vec![Value::Null, Value::Int(-2), Value::Text(b"ab".to_vec()), Value::Int(1)]);
        let e = decode(&[3, 0x19, 0]).unwrap_err();
        assert!(e.to_string().contains("runs past the 3-byte payload"), "{e}");
        let e = decode(&[200]).unwrap_err();
        assert!(e.to_string().contains("truncated record header size"), "{e}");
    }
}
