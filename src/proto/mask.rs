//! Payload masking (RFC 6455 §5.3): XOR with a 4-byte key, repeating from the first payload byte.
//! `apply_mask` works eight bytes at a time through `u64` with safe code only; the byte loop
//! `apply_mask_bytewise` is its reference twin for the differential test and the benches.
//! Pure: no allocation, no IO.

/// XORs `buf` with `key`, the first byte of `buf` being payload byte 0; eight bytes per step.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    apply_mask_at(buf, key, 0);
}

/// XORs `buf` with `key` when `offset` payload bytes precede it (unmasking a payload in pieces).
pub fn apply_mask_at(buf: &mut [u8], key: [u8; 4], offset: usize) {
    // Rotate the key so that key[0] lines up with buf[0]; every 8-byte chunk then starts at the
    // same phase because 8 is a multiple of 4, and so does the tail.
    let mut key = key;
    key.rotate_left(offset % 4);
    let [a, b, c, d] = key;
    let word = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        if let Ok(bytes) = <&mut [u8; 8]>::try_from(chunk) {
            *bytes = (u64::from_ne_bytes(*bytes) ^ word).to_ne_bytes();
        }
    }
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// XORs `buf` with `key` one byte at a time: the obviously correct reference for `apply_mask`.
pub fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4]) {
    for (byte, k) in buf.iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: [[u8; 4]; 5] = [
        [0, 0, 0, 0],
        [0x37, 0xfa, 0x21, 0x3d],
        [0xff, 0xff, 0xff, 0xff],
        [1, 2, 3, 4],
        [0x80, 0x00, 0x7f, 0xa5],
    ];

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + 7) as u8).collect()
    }

    #[test]
    fn rfc_hello_vector() {
        // RFC 6455 §5.7: a masked "Hello" from the client.
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn fast_path_matches_byte_loop_for_every_length_and_alignment() {
        for key in KEYS {
            for start in 0..8 {
                for len in 0..=100 {
                    // `start` shifts the slice inside its allocation, so the u64 chunks land on
                    // every alignment.
                    let mut fast = sample(start + len);
                    let mut slow = fast.clone();
                    apply_mask(&mut fast[start..], key);
                    apply_mask_bytewise(&mut slow[start..], key);
                    assert_eq!(fast, slow, "key {key:?} start {start} len {len}");
                }
            }
        }
    }

    #[test]
    fn masking_in_pieces_equals_masking_at_once() {
        for key in KEYS {
            for split in 0..=40 {
                let mut whole = sample(40);
                let mut pieces = whole.clone();
                apply_mask_bytewise(&mut whole, key);
                let (head, tail) = pieces.split_at_mut(split);
                apply_mask_at(head, key, 0);
                apply_mask_at(tail, key, split);
                assert_eq!(whole, pieces, "key {key:?} split {split}");
            }
        }
    }

    #[test]
    fn masking_twice_restores_the_input() {
        let original = sample(1000);
        let mut buf = original.clone();
        apply_mask(&mut buf, [9, 8, 7, 6]);
        assert_ne!(buf, original);
        apply_mask(&mut buf, [9, 8, 7, 6]);
        assert_eq!(buf, original);
    }
}
