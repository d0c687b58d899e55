//! Header parsing is total: any bytes and any object length give Ok or a HeaderError,
//! never a panic; an accepted header is internally consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmkit::segment::{Header, header::HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    // The object length is the input length, or (to reach the length checks with
    // otherwise valid headers) the value stored in the trailing 8 bytes.
    let mut lens = vec![data.len() as u64];
    if data.len() >= HEADER_LEN + 8 {
        let tail: [u8; 8] = data[data.len() - 8..].try_into().unwrap();
        lens.push(u64::from_le_bytes(tail));
    }
    for len in lens {
        if let Ok(h) = Header::parse(data, len) {
            let r = h.payload_range();
            assert!(r.start >= HEADER_LEN && r.start % 64 == 0);
            assert!(r.end as u64 <= len);
            // The payload must suit the element type: its offset a multiple of
            // max(64, elem_align) (issue 9: a forged header must not make a typed view
            // misaligned), and the whole range inside the object.
            let align = h.raw.elem_align.max(64);
            assert!(
                h.raw.payload_offset % align == 0,
                "payload offset {} accepted for element alignment {}",
                h.raw.payload_offset,
                h.raw.elem_align
            );
            let end = h.raw.payload_offset.checked_add(h.raw.payload_len);
            assert!(end.is_some_and(|e| e <= len && e <= h.raw.total_len));
            assert!(h.raw.elem_size.checked_mul(h.raw.elem_count).unwrap() <= h.raw.payload_len);
            assert!(h.raw.elem_align.is_power_of_two());
            let _ = h.type_name();
            let _ = h.kind().name();
        }
    }
});
