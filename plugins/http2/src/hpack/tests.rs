//! RFC 7541 Appendix C, decoded in sequence (each step depends on the dynamic table the
//! previous ones left), and the refusals that keep a partial table from lying.

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn fields(d: &mut Decoder, block: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    d.decode(&hex(block), &mut out).unwrap();
    out.into_iter()
        .map(|f| {
            (
                String::from_utf8(f.name).unwrap(),
                String::from_utf8(f.value).unwrap(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// C.3 (plain) and C.4 (Huffman): three requests on one connection.
#[test]
fn rfc_7541_c3_and_c4_requests() {
    let plain = [
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ];
    let huffman = [
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ];
    let expected = [
        pairs(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ]),
        pairs(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
            ("cache-control", "no-cache"),
        ]),
        pairs(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ]),
    ];
    let sizes = [57, 110, 164];
    for blocks in [plain, huffman] {
        let mut d = Decoder::new(4096, false);
        for ((block, want), size) in blocks.iter().zip(&expected).zip(sizes) {
            assert_eq!(&fields(&mut d, block), want);
            assert_eq!(d.table.size(), size);
        }
    }
}

/// C.5 (plain) and C.6 (Huffman): three responses through a 256-byte table, with evictions.
#[test]
fn rfc_7541_c5_and_c6_responses_with_eviction() {
    let plain = [
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
         6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d \
         54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 \
         5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e \
         3d31",
    ];
    let huffman = [
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
         9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ];
    let date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
    let loc = "https://www.example.com";
    let expected = [
        pairs(&[
            (":status", "302"),
            ("cache-control", "private"),
            ("date", date1),
            ("location", loc),
        ]),
        pairs(&[
            (":status", "307"),
            ("cache-control", "private"),
            ("date", date1),
            ("location", loc),
        ]),
        pairs(&[
            (":status", "200"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
            ("location", loc),
            ("content-encoding", "gzip"),
            (
                "set-cookie",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            ),
        ]),
    ];
    let sizes = [222, 222, 215];
    let lens = [4, 4, 3];
    for blocks in [plain, huffman] {
        let mut d = Decoder::new(4096, false);
        d.table.resize(256);
        for (((block, want), size), len) in blocks.iter().zip(&expected).zip(sizes).zip(lens) {
            assert_eq!(&fields(&mut d, block), want);
            assert_eq!((d.table.size(), d.table.len()), (size, len));
        }
    }
}

/// A decoder that joined mid-connection decodes what only uses the static table and entries
/// it saw inserted, and refuses the rest rather than guess.
#[test]
fn a_partial_table_refuses_unknown_entries() {
    let mut d = Decoder::new(4096, true);
    // C.4.1 only uses the static table and inserts :authority.
    let c41 = hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff");
    let mut out = Vec::new();
    assert_eq!(d.decode(&c41, &mut out), Ok(()));
    // C.4.2 uses that entry (index 62): known.
    let c42 = hex("8286 84be 5886 a8eb 1064 9cbf");
    assert_eq!(d.decode(&c42, &mut out), Ok(()));
    assert_eq!(out[3].value, b"www.example.com");
    // Index 64 was inserted before we joined: refused, nothing kept.
    assert_eq!(d.decode(&hex("82c0"), &mut out), Err(Error::Desync));
    assert!(out.is_empty());
    // And after a refusal the table is partial again, empty: even 62 is unknown now.
    assert_eq!(d.decode(&hex("be"), &mut out), Err(Error::Desync));
    // A decoder that followed from the start calls the same reference invalid.
    let mut full = Decoder::new(4096, false);
    assert_eq!(full.decode(&hex("be"), &mut out), Err(Error::Invalid));
    assert!(full.partial(), "unknown afterwards");
}

#[test]
fn malformed_blocks_are_refused() {
    let bad = [
        "80",                      // index 0
        "41",                      // literal without its value
        "4105 6162",               // string longer than the block
        "ff ff ff ff ff ff ff 7f", // integer overflow
        "82 20",                   // size update after a field
        "4184 ffff ffff",          // Huffman string with EOS
    ];
    for b in bad {
        let mut d = Decoder::new(4096, false);
        let mut out = Vec::new();
        assert_eq!(d.decode(&hex(b), &mut out), Err(Error::Invalid), "{b}");
    }
}

#[test]
fn integers() {
    // RFC 7541 C.1: 10 and 1337 with a 5-bit prefix, 42 with 8 bits.
    let mut b: &[u8] = &[0x0a];
    assert_eq!(integer(&mut b, 5), Ok(10));
    let mut b: &[u8] = &[0x1f, 0x9a, 0x0a];
    assert_eq!(integer(&mut b, 5), Ok(1337));
    assert!(b.is_empty());
    let mut b: &[u8] = &[0x2a];
    assert_eq!(integer(&mut b, 8), Ok(42));
}
