//! Protobuf wire format: tags, varints, fixed-width values and length-delimited slices.
//!
//! Everything borrows from the input: a length prefix is only ever used to slice bytes that are
//! already there, so a hostile length cannot make the decoder allocate, and every read is
//! bounds-checked instead of indexed.

use super::ProtoError;

/// Protobuf allows field numbers up to 2^29 - 1.
const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;

/// Group nesting is only skipped, never decoded, but is still bounded so that a run of
/// start-group tags cannot make skipping quadratic or unbounded in state.
const MAX_GROUP_DEPTH: usize = 64;

/// One field's payload, by wire type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
    /// A (deprecated) group, already skipped: no k8s field is a group, so it is only legal as an
    /// unknown field, as gogo-protobuf's generated skipping allows.
    Group,
}

impl Wire<'_> {
    /// The wire type number, for error messages.
    pub(crate) fn wire_type(&self) -> u8 {
        match self {
            Wire::Varint(_) => 0,
            Wire::Fixed64(_) => 1,
            Wire::Bytes(_) => 2,
            Wire::Group => 3,
            Wire::Fixed32(_) => 5,
        }
    }
}

/// A cursor over one message's bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(crate) fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut value: u64 = 0;
        // A u64 takes at most 10 groups of 7 bits; the 10th may only carry the top bit.
        for i in 0..10u32 {
            let byte = *self.buf.get(self.pos).ok_or(ProtoError::UnexpectedEof)?;
            self.pos += 1;
            if i == 9 && byte > 1 {
                return Err(ProtoError::VarintOverflow);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(ProtoError::VarintOverflow)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self.pos.checked_add(n).ok_or(ProtoError::UnexpectedEof)?;
        let out = self.buf.get(self.pos..end).ok_or(ProtoError::UnexpectedEof)?;
        self.pos = end;
        Ok(out)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], ProtoError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn length_delimited(&mut self, field: u32) -> Result<&'a [u8], ProtoError> {
        let length = self.varint()?;
        let remaining = self.buf.len().saturating_sub(self.pos);
        match usize::try_from(length) {
            Ok(n) if n <= remaining => self.take(n),
            _ => Err(ProtoError::LengthOutOfBounds { field, length, remaining }),
        }
    }

    /// The next field's number and payload, or `None` at the end of the message.
    pub(crate) fn next_field(&mut self) -> Result<Option<(u32, Wire<'a>)>, ProtoError> {
        if self.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (number, wire_type) = split_key(key)?;
        let wire = match wire_type {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(self.fixed::<8>()?)),
            2 => Wire::Bytes(self.length_delimited(number)?),
            3 => {
                self.skip_group(number)?;
                Wire::Group
            }
            5 => Wire::Fixed32(u32::from_le_bytes(self.fixed::<4>()?)),
            // 4 (end group) is only legal inside a group, which skip_group consumes.
            other => return Err(ProtoError::IllegalWireType(other)),
        };
        Ok(Some((number, wire)))
    }

    /// Skips to the end-group tag matching `number`, iteratively.
    fn skip_group(&mut self, number: u32) -> Result<(), ProtoError> {
        let mut open = vec![number];
        while let Some(&innermost) = open.last() {
            let key = self.varint()?;
            let (n, wire_type) = split_key(key)?;
            match wire_type {
                0 => drop(self.varint()?),
                1 => drop(self.take(8)?),
                2 => drop(self.length_delimited(n)?),
                3 if open.len() < MAX_GROUP_DEPTH => open.push(n),
                3 => return Err(ProtoError::TooDeep { limit: MAX_GROUP_DEPTH }),
                4 if n == innermost => drop(open.pop()),
                5 => drop(self.take(4)?),
                other => return Err(ProtoError::IllegalWireType(other)),
            }
        }
        Ok(())
    }
}

fn split_key(key: u64) -> Result<(u32, u8), ProtoError> {
    let wire_type = (key & 7) as u8;
    let number = key >> 3;
    if number == 0 || number > MAX_FIELD_NUMBER {
        return Err(ProtoError::IllegalTag { number, wire_type });
    }
    // Bounded by MAX_FIELD_NUMBER just above, so this conversion cannot fail.
    let number = u32::try_from(number).map_err(|_| ProtoError::IllegalTag { number, wire_type })?;
    Ok((number, wire_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_wire_type_and_skips_groups() {
        // 1: varint 150; 2: "hi"; 3: fixed64; 4: group { 1: varint 1 } ; 5: fixed32.
        let buf = [
            0x08, 0x96, 0x01, 0x12, 2, b'h', b'i', 0x19, 1, 0, 0, 0, 0, 0, 0, 0, 0x23, 0x08, 1, 0x24, 0x2d, 2,
            0, 0, 0,
        ];
        let mut r = Reader::new(&buf);
        assert_eq!(r.next_field().unwrap(), Some((1, Wire::Varint(150))));
        assert_eq!(r.next_field().unwrap(), Some((2, Wire::Bytes(b"hi"))));
        assert_eq!(r.next_field().unwrap(), Some((3, Wire::Fixed64(1))));
        assert_eq!(r.next_field().unwrap(), Some((4, Wire::Group)));
        assert_eq!(r.next_field().unwrap(), Some((5, Wire::Fixed32(2))));
        assert_eq!(r.next_field().unwrap(), None);
    }

    #[test]
    fn rejects_malformed_input() {
        let err = |b: &[u8]| Reader::new(b).next_field().unwrap_err();
        assert_eq!(err(&[0x08]), ProtoError::UnexpectedEof);
        assert_eq!(
            err(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            ProtoError::VarintOverflow
        );
        assert_eq!(
            err(&[0x12, 0x7f, 1]),
            ProtoError::LengthOutOfBounds { field: 2, length: 127, remaining: 1 }
        );
        assert_eq!(err(&[0x00]), ProtoError::IllegalTag { number: 0, wire_type: 0 });
        assert_eq!(err(&[0x0e]), ProtoError::IllegalWireType(6));
        assert_eq!(err(&[0x0c]), ProtoError::IllegalWireType(4));
        // An unterminated group.
        assert_eq!(err(&[0x0b, 0x08, 1]), ProtoError::UnexpectedEof);
        // A group bomb: start-group tags nested past the bound.
        assert_eq!(err(&[0x0b; 200]), ProtoError::TooDeep { limit: MAX_GROUP_DEPTH });
        // A huge length must not be trusted (nor allocated).
        let huge = [0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(matches!(err(&huge), ProtoError::LengthOutOfBounds { field: 2, .. }));
    }
}
