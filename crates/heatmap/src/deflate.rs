//! DEFLATE for filtered PNG rows, in independent pieces that join into one zlib stream.
//!
//! A single DEFLATE stream is serial: each block starts at the bit where the one before it
//! ended. The way round it (pigz's) is to compress bands of the data independently, end
//! every band but the last with a sync flush (an empty stored block, which ends on a byte
//! boundary), and concatenate them; the zlib trailer's Adler-32 is combined from the
//! bands' checksums without reading the data again.
//!
//! Each band is coded the way `fdeflate` (the `png` crate's fast compressor) codes data:
//! one dynamic Huffman block with a fixed code tuned for filtered image rows, literals for
//! every byte except runs of zeros, which become matches at distance 1. It is the cheapest
//! coding that still compresses filtered rows well, and it carries no dictionary from band
//! to band, so splitting costs only a block header per band. The code table and its block
//! header are `fdeflate` 0.3's (MIT OR Apache-2.0), so a stream of one band is byte for byte
//! what `fdeflate` writes, which a test checks.

/// Code length of each literal/length symbol (0–285) in the fixed code.
const CODE_LENGTHS: [u8; 286] = [
    2, 3, 4, 5, 5, 6, 6, 7, 7, 7, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 10, 10, 10, 10, 10, 10, 10,
    10, 10, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 11, 11, 11, 11, 11, 11, 11,
    11, 11, 11, 10, 11, 10, 10, 10, 10, 10, 10, 10, 10, 10, 9, 9, 9, 9, 9, 8, 9, 8, 8, 8, 8, 8, 7,
    7, 7, 6, 6, 6, 5, 4, 3, 12, 12, 12, 9, 9, 11, 10, 11, 11, 10, 11, 11, 11, 11, 11, 11, 12, 11,
    12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 9,
];

/// Each symbol's code, bit-reversed as DEFLATE writes Huffman codes (least significant
/// bit first).
const CODES: [u16; 286] = canonical_codes(&CODE_LENGTHS);

/// The codes of every two literals written one after the other, indexed by the first
/// byte plus 256 times the second (a little-endian pair read from the data): the joined
/// code (the first's bits lowest) above bit 5, the joined length (at most 24) in the low
/// five bits.
///
/// Coding eight literals as four lookups here instead of eight code and eight length
/// lookups cut the coder's instructions by a fifth. The table is 256 KiB, but filtered
/// rows are mostly small values either side of zero, so few of its cache lines are used.
static PAIR_CODES: [u32; 1 << 16] = pair_codes();

// `BitWriter::write_middle` pads with zero literals and drops their bits: that needs a zero
// literal to be all zero bits.
const _: () = assert!(CODES[0] == 0 && CODE_LENGTHS[0] == 2);

const fn pair_codes() -> [u32; 1 << 16] {
    let mut table = [0u32; 1 << 16];
    let mut pair = 0;
    while pair < table.len() {
        let (first, second) = (pair & 0xff, pair >> 8);
        let n_first = CODE_LENGTHS[first] as u32;
        let bits = CODES[first] as u32 | ((CODES[second] as u32) << n_first);
        table[pair] = (bits << 5) | (n_first + CODE_LENGTHS[second] as u32);
        pair += 1;
    }
    table
}

/// The dynamic block header declaring [`CODE_LENGTHS`] (and a single one-bit distance code
/// for distance 1): 51 whole bytes and then [`HEADER_TAIL_BITS`] bits of the last byte.
/// Its first bit is BFINAL, set here.
const BLOCK_HEADER: [u8; 52] = [
    237, 192, 3, 160, 36, 89, 150, 198, 241, 255, 119, 238, 141, 200, 204, 167, 114, 75, 99, 174,
    109, 219, 182, 109, 219, 182, 109, 219, 182, 109, 105, 140, 158, 150, 74, 175, 158, 50, 51, 34,
    238, 249, 118, 183, 106, 122, 166, 135, 59, 107, 213, 15,
];

/// Bits of `BLOCK_HEADER`'s last byte that belong to the header.
const HEADER_TAIL_BITS: u8 = 5;

/// The end-of-block symbol.
const END_OF_BLOCK: usize = 256;

/// The symbol for a match of 258 bytes, the longest DEFLATE has.
const LONGEST_MATCH: usize = 285;

/// Whether a band ends the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Band {
    /// Ends with a sync flush, so the next band's bytes can follow it directly.
    Inner,
    /// Ends the DEFLATE stream (its block is marked final).
    Last,
}

/// Compresses `data` as one band of a raw DEFLATE stream and appends it to `out`; returns
/// the Adler-32 of `data`, for [`adler32_combine`].
pub(crate) fn deflate_band(data: &[u8], band: Band, out: &mut Vec<u8>) -> u32 {
    // The writer owns the vector while it works (one indirection less per write).
    let mut writer = BitWriter {
        out: std::mem::take(out),
        buffer: 0,
        n_bits: 0,
    };
    let (whole, tail) = BLOCK_HEADER.split_at(BLOCK_HEADER.len() - 1);
    let first = match band {
        Band::Inner => whole[0] & !1,
        Band::Last => whole[0],
    };
    writer.out.push(first);
    writer.out.extend_from_slice(&whole[1..]);
    writer.write_bits(u64::from(tail[0]), HEADER_TAIL_BITS);
    write_symbols(&mut writer, data);
    writer.write_symbol(END_OF_BLOCK);
    if band == Band::Inner {
        // An empty stored block, not final: three zero header bits, then zero bits to the
        // byte boundary, then LEN = 0 and NLEN = !0.
        writer.write_bits(0, 3);
        writer.align();
        writer.out.extend_from_slice(&[0, 0, 0xff, 0xff]);
    } else {
        writer.align();
    }
    *out = writer.out;
    let mut adler = simd_adler32::Adler32::new();
    adler.write(data);
    adler.finish()
}

/// The Adler-32 of two pieces of data joined, from each piece's Adler-32 and the second
/// piece's length (zlib's `adler32_combine`).
pub(crate) fn adler32_combine(first: u32, second: u32, second_len: usize) -> u32 {
    const BASE: u64 = 65_521;
    let remainder = second_len as u64 % BASE;
    let (first_a, first_b) = (u64::from(first & 0xffff), u64::from(first >> 16));
    let (second_a, second_b) = (u64::from(second & 0xffff), u64::from(second >> 16));
    // Every byte of the second piece adds the first piece's `a` once more to `b`.
    let a = (first_a + second_a + BASE - 1) % BASE;
    let b = (first_b + second_b + remainder * first_a + BASE - remainder) % BASE;
    ((b << 16) | a) as u32
}

/// Codes `data`: literals, and runs of zero bytes as matches at distance 1 after a literal
/// zero. Eight bytes are looked at together, so long zero runs cost one test per eight.
///
/// A run is the zero bytes at the end of one eight-byte chunk, any all-zero chunks after
/// it, and the zero bytes at the start of the next chunk; zeros inside a chunk are
/// literals (as `fdeflate` codes them). What is left of a chunk between its runs is coded
/// with the pair table in one go: see [`BitWriter::write_middle`].
fn write_symbols(writer: &mut BitWriter, data: &[u8]) {
    let mut run = 0u32;
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let word = u64::from_le_bytes(bytes);
        if word == 0 {
            run += 8;
            continue;
        }
        // Zero bytes at the chunk's start (lowest first) and at its end; a non-zero byte
        // lies between them.
        let zeros_first = word.trailing_zeros() / 8;
        let zeros_last = word.leading_zeros() / 8;
        let start = if run > 0 {
            // The run goes on into this chunk's first zero bytes.
            writer.write_run(run + zeros_first);
            zeros_first
        } else {
            0
        };
        writer.write_middle(word, start, zeros_last);
        // A new run may start at the chunk's end.
        run = zeros_last;
    }
    if run > 0 {
        writer.write_run(run);
    }
    for &byte in chunks.remainder() {
        writer.write_symbol(usize::from(byte));
    }
}

/// Bits collected least significant first and written out 64 at a time.
struct BitWriter {
    out: Vec<u8>,
    buffer: u64,
    n_bits: u8,
}

impl BitWriter {
    /// Appends the low `n_bits` (at most 64) of `bits`.
    fn write_bits(&mut self, bits: u64, n_bits: u8) {
        // `n_bits` is below 64 between writes, so the shift is in range.
        self.buffer |= bits << self.n_bits;
        self.n_bits += n_bits;
        if self.n_bits >= 64 {
            self.out.extend_from_slice(&self.buffer.to_le_bytes());
            self.n_bits -= 64;
            // The bits of `bits` that did not fit.
            self.buffer = bits
                .checked_shr(u32::from(n_bits - self.n_bits))
                .unwrap_or(0);
        }
    }

    /// The literals of `word`'s bytes (little-endian order) from `skip_first` to
    /// `8 - skip_last`, in two writes.
    ///
    /// The word is shifted so that those bytes come first, with zero bytes after them, and
    /// all eight bytes are coded by four lookups in [`PAIR_CODES`]. A zero literal's code is
    /// two zero bits, so the padding adds only zero bits at the end: leaving out two bits a
    /// padding byte gives exactly the literals asked for.
    fn write_middle(&mut self, word: u64, skip_first: u32, skip_last: u32) {
        let word = word >> (skip_first * 8);
        let pair = |shift: u32| PAIR_CODES[((word >> shift) & 0xffff) as usize];
        let (first, second, third, fourth) = (pair(0), pair(16), pair(32), pair(48));
        let n_first = first & 0x1f;
        let n_low = n_first + (second & 0x1f);
        let low = u64::from(first >> 5) | (u64::from(second >> 5) << n_first);
        let n_third = third & 0x1f;
        let n_high = n_third + (fourth & 0x1f);
        let high = u64::from(third >> 5) | (u64::from(fourth >> 5) << n_third);
        let n_padding = (skip_first + skip_last) * u32::from(CODE_LENGTHS[0]);
        // At most 96 bits in all, so each count fits a byte.
        let n_total = n_low + n_high - n_padding;
        let n_low = n_low.min(n_total);
        self.write_bits(low, n_low as u8);
        self.write_bits(high, (n_total - n_low) as u8);
    }

    fn write_symbol(&mut self, symbol: usize) {
        self.write_bits(u64::from(CODES[symbol]), CODE_LENGTHS[symbol]);
    }

    /// A zero byte followed by `run - 1` more, as a literal and matches at distance 1 (the
    /// one-bit distance code is a 0 after each length). `run` is at least 1.
    ///
    /// The literal zero's two zero bits go out with the first write after them, and what
    /// is left after the longest matches is one lookup in [`RUN_CODES`]: one write for
    /// any run shorter than 259 bytes.
    #[inline(always)]
    fn write_run(&mut self, run: u32) {
        let mut n_zeros = CODE_LENGTHS[0];
        let mut left = run - 1;
        while left >= 258 {
            self.write_bits(
                u64::from(CODES[LONGEST_MATCH]) << n_zeros,
                n_zeros + CODE_LENGTHS[LONGEST_MATCH] + 1,
            );
            n_zeros = 0;
            left -= 258;
        }
        let entry = RUN_CODES[left as usize];
        self.write_bits(
            u64::from(entry >> 5) << n_zeros,
            n_zeros + (entry & 0x1f) as u8,
        );
    }

    /// Pads with zero bits to a byte boundary and writes out what is buffered.
    fn align(&mut self) {
        let n_bytes = usize::from(self.n_bits.div_ceil(8));
        self.out
            .extend_from_slice(&self.buffer.to_le_bytes()[..n_bytes]);
        self.buffer = 0;
        self.n_bits = 0;
    }
}

/// The bits after a run's literal zero for `left` (0 to 257) more zero bytes, shifted
/// left by 5, with their number (at most 12 + 5 + 1) in the low five bits: up to four more
/// zero literals (shorter than a match, as a zero's code is two zero bits), or a length
/// code, its extra bits and the distance code's one zero bit.
const RUN_CODES: [u32; 258] = run_codes();

const fn run_codes() -> [u32; 258] {
    let mut table = [0u32; 258];
    let mut left = 0;
    while left < 258 {
        table[left] = if left > 4 {
            let (symbol, n_extra, base) = LENGTH_CODES[left - 3];
            let n_code = CODE_LENGTHS[symbol as usize] as u32;
            let bits = CODES[symbol as usize] as u32 | ((left as u32 - base as u32) << n_code);
            (bits << 5) | (n_code + n_extra as u32 + 1)
        } else {
            left as u32 * CODE_LENGTHS[0] as u32
        };
        left += 1;
    }
    table
}

/// Base lengths of the length symbols 257–285 (RFC 1951, 3.2.5).
const LENGTH_BASES: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];

/// Extra bits of the length symbols 257–285.
const LENGTH_EXTRA_BITS: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];

/// [`length_code`] for every match length, at `length - 3`: a run costs one lookup.
const LENGTH_CODES: [(u16, u8, u16); 256] = length_codes();

/// The length symbol for a match of `length` (3 to 258) bytes, its number of extra bits
/// and the length its extra bits count from; the tests read [`LENGTH_CODES`] through it.
#[cfg(test)]
fn length_code(length: u32) -> (usize, u8, u32) {
    let (symbol, n_extra, base) = LENGTH_CODES[(length as usize - 3) & 0xff];
    (usize::from(symbol), n_extra, u32::from(base))
}

const fn length_codes() -> [(u16, u8, u16); 256] {
    let mut table = [(0, 0, 0); 256];
    let mut code = 0;
    let mut length = 3;
    while length <= 258 {
        while code + 1 < LENGTH_BASES.len() && LENGTH_BASES[code + 1] <= length {
            code += 1;
        }
        table[length as usize - 3] = (
            257 + code as u16,
            LENGTH_EXTRA_BITS[code],
            LENGTH_BASES[code],
        );
        length += 1;
    }
    table
}

/// Canonical Huffman codes for `lengths` (RFC 1951, 3.2.2), bit-reversed.
const fn canonical_codes(lengths: &[u8; 286]) -> [u16; 286] {
    let mut codes = [0u16; 286];
    let mut code = 0u32;
    let mut length = 1;
    while length <= 16 {
        let mut symbol = 0;
        while symbol < lengths.len() {
            if lengths[symbol] == length {
                codes[symbol] = (code as u16).reverse_bits() >> (16 - length);
                code += 1;
            }
            symbol += 1;
        }
        code <<= 1;
        length += 1;
    }
    codes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes like filtered image rows: mostly small values and zero runs of every length.
    fn filtered_like(len: usize, seed: u32) -> Vec<u8> {
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let mut data = Vec::with_capacity(len);
        while data.len() < len {
            let pick = next();
            if pick % 5 == 0 {
                let run = (next() % 700) as usize;
                data.extend(std::iter::repeat_n(0, run));
            } else {
                data.push((pick >> 8) as u8 % 7 + (pick >> 16) as u8 % 2 * 249);
            }
        }
        data.truncate(len);
        data
    }

    /// A zlib stream of `data` cut into bands of `band_len` bytes.
    fn zlib_in_bands(data: &[u8], band_len: usize) -> Vec<u8> {
        let mut out = vec![0x78, 0x01];
        let bands: Vec<&[u8]> = data.chunks(band_len.max(1)).collect();
        let mut adler = 1;
        for (idx, band) in bands.iter().enumerate() {
            let kind = if idx + 1 == bands.len() {
                Band::Last
            } else {
                Band::Inner
            };
            let band_adler = deflate_band(band, kind, &mut out);
            adler = adler32_combine(adler, band_adler, band.len());
        }
        if bands.is_empty() {
            deflate_band(&[], Band::Last, &mut out);
        }
        out.extend_from_slice(&adler.to_be_bytes());
        out
    }

    #[test]
    fn one_band_is_exactly_what_fdeflate_writes() {
        for (len, seed) in [(0, 1), (1, 2), (7, 3), (100_000, 4), (65_537, 5)] {
            let data = filtered_like(len, seed);
            assert_eq!(
                zlib_in_bands(&data, usize::MAX),
                fdeflate::compress_to_vec(&data),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn every_pair_of_literals_is_coded_as_fdeflate_codes_it() {
        // Every (first, second) pair of non-zero bytes, at every offset in an eight-byte
        // chunk: no zero runs, so all of it goes through the pair table.
        let pairs: Vec<u8> = (1..=255u8)
            .flat_map(|first| (1..=255u8).flat_map(move |second| [first, second]))
            .collect();
        for skip in [0, 1] {
            let data = &pairs[skip..];
            assert_eq!(
                zlib_in_bands(data, usize::MAX),
                fdeflate::compress_to_vec(data),
                "pairs from offset {skip}"
            );
        }
    }

    #[test]
    fn bands_join_into_one_stream_that_decodes_to_the_data() {
        let data = filtered_like(300_001, 9);
        for band_len in [1, 8, 13, 4096, 100_000] {
            // One-byte bands cost a block header each: a shorter piece shows as much.
            let data = &data[..data.len().min(band_len * 5_000)];
            let stream = zlib_in_bands(data, band_len);
            let decoded = fdeflate::decompress_to_vec(&stream)
                .unwrap_or_else(|err| panic!("bands of {band_len}: {err:?}"));
            assert_eq!(decoded, data, "bands of {band_len}");
        }
    }

    #[test]
    fn combined_checksums_equal_the_checksum_of_the_whole() {
        let data = filtered_like(200_000, 3);
        let adler = |bytes: &[u8]| {
            let mut hasher = simd_adler32::Adler32::new();
            hasher.write(bytes);
            hasher.finish()
        };
        for split in [0, 1, 5551, 5552, 65_521, 65_522, 131_042, 200_000] {
            let (first, second) = data.split_at(split);
            assert_eq!(
                adler32_combine(adler(first), adler(second), second.len()),
                adler(&data),
                "split at {split}"
            );
        }
    }

    #[test]
    fn length_codes_follow_the_deflate_table() {
        assert_eq!(length_code(3), (257, 0, 3));
        assert_eq!(length_code(10), (264, 0, 10));
        assert_eq!(length_code(12), (265, 1, 11));
        assert_eq!(length_code(257), (284, 5, 227));
        assert_eq!(length_code(258), (285, 0, 258));
    }
}
