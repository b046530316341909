//! PNG encoding tuned for heatmaps: bands of rows filtered and compressed in parallel.
//!
//! Heatmaps on white or on transparency are written as indexed PNGs (one byte a pixel and
//! a palette, [`encode_indexed`]); heat over a screenshot needs every colour and is RGB.
//!
//! The `png` crate filters and compresses on one thread. Here the image is cut into bands
//! of rows; each band is Paeth-filtered into a small buffer and compressed at once, while
//! the buffer is still in the core's cache, on every core; the bands join into one zlib
//! stream (`deflate.rs`, coded as `fdeflate`, the `png` crate's fast setting, codes).
//! The container (signature, IHDR, IDAT, IEND with CRCs) is small enough to write by hand.

use rayon::prelude::*;

use crate::deflate::{adler32_combine, deflate_band, Band};
use crate::render::{Indexed, Pixels};
use crate::Error;

/// PNG's eight-byte signature.
const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// The row filter type byte for Paeth (PNG spec 9.4): the best of the five filters on
/// smooth gradients, and exact zeros on flat background. On the indexed 1080p bench image
/// it gives 454 KiB against Up's 510 and Sub's 518 (and 3 MiB unfiltered, which the coder's
/// fixed code, tuned for small filtered values, makes larger than the raw bytes), for
/// about 5 M instructions more than Up.
const PAETH: u8 = 4;

/// Encodes RGB or RGBA pixels as an 8-bit PNG.
///
/// # Errors
/// None today: the compressor writes to memory. [`Error::Encode`] stays in the signature
/// so that an encoder writing elsewhere would not change it.
pub fn encode_png(pixels: &Pixels, width: u32, height: u32) -> Result<Vec<u8>, Error> {
    let colour_type = if pixels.channels == 4 { 6 } else { 2 };
    let idat = filter_and_compress(&pixels.bytes, pixels.channels, width, height);
    Ok(container(width, height, colour_type, &[], &idat))
}

/// Encodes palette indices as an 8-bit indexed PNG: a `PLTE` chunk with the colours, and a
/// `tRNS` chunk with their opacities when any entry is not opaque.
///
/// # Errors
/// None today, as for [`encode_png`].
pub fn encode_indexed(image: &Indexed, width: u32, height: u32) -> Result<Vec<u8>, Error> {
    let idat = filter_and_compress(&image.indices, 1, width, height);
    let palette: Vec<u8> = image
        .palette
        .iter()
        .flat_map(|&[r, g, b, _]| [r, g, b])
        .collect();
    // Entries after the last translucent one are opaque by default and need no byte.
    let n_alphas = image
        .palette
        .iter()
        .rposition(|colour| colour[3] < u8::MAX)
        .map_or(0, |last| last + 1);
    let alphas: Vec<u8> = image.palette[..n_alphas]
        .iter()
        .map(|colour| colour[3])
        .collect();
    let mut chunks: Vec<(&[u8; 4], &[u8])> = vec![(b"PLTE", &palette)];
    if n_alphas > 0 {
        chunks.push((b"tRNS", &alphas));
    }
    Ok(container(width, height, 3, &chunks, &idat))
}

/// Filtered bytes per band: small enough that a band and its compressed output stay in a
/// core's L2 cache between filtering and compressing, large enough that a band's block
/// header (about 60 bytes) costs nothing measurable. Fixed, not derived from the number of
/// cores, so the same image gives the same file on any machine.
const BAND_BYTES: usize = 120 * 1024;

/// A zlib stream held as its compressed bands, so that it is copied once, straight into
/// the PNG file's `IDAT` chunk, instead of being joined first and copied again.
struct Zlib {
    /// Each band's raw DEFLATE bytes; the last one ends the stream.
    bands: Vec<Vec<u8>>,
    /// The Adler-32 of all the filtered bytes, combined from the bands'.
    adler: u32,
}

impl Zlib {
    /// The zlib header, its two bytes: CM 8 (deflate), a 32 KiB window, the fastest level;
    /// the check bits make it a multiple of 31.
    const HEADER: [u8; 2] = [0x78, 0x01];

    /// Bytes of the whole stream: header, bands, checksum.
    fn len(&self) -> usize {
        Self::HEADER.len() + self.bands.iter().map(Vec::len).sum::<usize>() + 4
    }

    /// Appends the whole stream to `out`.
    fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&Self::HEADER);
        for band in &self.bands {
            out.extend_from_slice(band);
        }
        out.extend_from_slice(&self.adler.to_be_bytes());
    }
}

/// Filters bands of rows and compresses each band on its own, on every core; the bands
/// join into one zlib stream (`deflate.rs`).
fn filter_and_compress(bytes: &[u8], bytes_per_pixel: usize, width: u32, height: u32) -> Zlib {
    let stride = width as usize * bytes_per_pixel;
    let height = height as usize;
    let rows_per_band = (BAND_BYTES / (stride + 1)).max(1);
    let n_bands = height.div_ceil(rows_per_band);
    let compressed: Vec<(Vec<u8>, u32, usize)> = (0..n_bands)
        .into_par_iter()
        .map_init(Vec::new, |filtered: &mut Vec<u8>, band| {
            let first = band * rows_per_band;
            let end = (first + rows_per_band).min(height);
            // Every byte is written below, so what a reused buffer held does not matter.
            filtered.resize((end - first) * (stride + 1), 0);
            for (out, y) in filtered.chunks_exact_mut(stride + 1).zip(first..end) {
                let row = &bytes[y * stride..(y + 1) * stride];
                let above = (y > 0).then(|| &bytes[(y - 1) * stride..y * stride]);
                paeth_row(out, row, above, bytes_per_pixel);
            }
            let kind = if band + 1 == n_bands {
                Band::Last
            } else {
                Band::Inner
            };
            let mut compressed = Vec::with_capacity(filtered.len() / 4 + 64);
            let adler = deflate_band(filtered, kind, &mut compressed);
            (compressed, adler, filtered.len())
        })
        .collect();
    let mut adler = 1;
    let mut bands = Vec::with_capacity(compressed.len().max(1));
    for (band, band_adler, len) in compressed {
        adler = adler32_combine(adler, band_adler, len);
        bands.push(band);
    }
    if bands.is_empty() {
        let mut last = Vec::new();
        deflate_band(&[], Band::Last, &mut last);
        bands.push(last);
    }
    Zlib { bands, adler }
}

/// The PNG file around compressed image data: signature, `IHDR`, the extra chunks
/// (palette, transparency), `IDAT`, `IEND`.
fn container(
    width: u32,
    height: u32,
    colour_type: u8,
    chunks: &[(&[u8; 4], &[u8])],
    idat: &Zlib,
) -> Vec<u8> {
    let extra: usize = chunks.iter().map(|(_, data)| data.len() + 12).sum();
    let idat_len = idat.len();
    let mut png = Vec::with_capacity(idat_len + extra + 64);
    png.extend_from_slice(&SIGNATURE);
    let mut header = Vec::with_capacity(13);
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, colour_type, 0, 0, 0]);
    write_chunk(&mut png, b"IHDR", &header);
    for (kind, data) in chunks {
        write_chunk(&mut png, kind, data);
    }
    // Our images are at most 8192x8192x4 bytes before compression, far below 2^31.
    png.extend_from_slice(&(idat_len as u32).to_be_bytes());
    let typed = png.len();
    png.extend_from_slice(b"IDAT");
    idat.write_to(&mut png);
    let crc = crc32fast::hash(&png[typed..]);
    png.extend_from_slice(&crc.to_be_bytes());
    write_chunk(&mut png, b"IEND", &[]);
    png
}

/// Writes one chunk: length, type, data, CRC of type and data.
fn write_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    // Chunks other than `IDAT` are a few hundred bytes.
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    png.extend_from_slice(kind);
    png.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    png.extend_from_slice(&crc.finalize().to_be_bytes());
}

/// Filters one row with Paeth prediction into `out` (filter byte, then the row).
fn paeth_row(out: &mut [u8], row: &[u8], above: Option<&[u8]>, channels: usize) {
    out[0] = PAETH;
    let out = &mut out[1..];
    match above {
        None => {
            // With no row above, Paeth predicts from the left neighbour only.
            out[..channels].copy_from_slice(&row[..channels]);
            for idx in channels..row.len() {
                out[idx] = row[idx].wrapping_sub(row[idx - channels]);
            }
        }
        Some(above) => {
            for idx in 0..channels {
                out[idx] = row[idx].wrapping_sub(above[idx]);
            }
            // Slices of one length, so the loop has no bounds checks and vectorises.
            let n = row.len().min(above.len()).min(out.len());
            let (left, here) = (&row[..n - channels], &row[channels..n]);
            let (up_left, up) = (&above[..n - channels], &above[channels..n]);
            let out = &mut out[channels..n];
            for idx in 0..n - channels {
                let predicted = paeth(left[idx], up[idx], up_left[idx]);
                out[idx] = here[idx].wrapping_sub(predicted);
            }
        }
    }
}

/// The Paeth predictor of the PNG spec: the neighbour closest to `left + up - up_left`.
///
/// The three distances are written out (`estimate - left` is `up - up_left`, and so on)
/// and the choice is made with comparisons only, which the compiler turns into vector
/// selects: the filter loop runs 16 bytes at a time instead of one.
fn paeth(left: u8, up: u8, up_left: u8) -> u8 {
    let (left16, up16, up_left16) = (i16::from(left), i16::from(up), i16::from(up_left));
    let to_left = (up16 - up_left16).abs();
    let to_up = (left16 - up_left16).abs();
    let to_up_left = (left16 + up16 - 2 * up_left16).abs();
    if to_left <= to_up && to_left <= to_up_left {
        left
    } else if to_up <= to_up_left {
        up
    } else {
        up_left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(channels: usize, width: u32, height: u32) {
        let bytes: Vec<u8> = (0..width as usize * height as usize * channels)
            .map(|idx| ((idx * 31) ^ (idx / 7)) as u8)
            .collect();
        let pixels = Pixels {
            bytes: bytes.clone(),
            channels,
        };
        let png = encode_png(&pixels, width, height).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .unwrap();
        let mut decoded = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut decoded).unwrap();
        assert_eq!((info.width, info.height), (width, height));
        assert_eq!(&decoded[..info.buffer_size()], bytes.as_slice());
    }

    #[test]
    fn a_standard_decoder_reads_back_the_palette_indices_and_opacities() {
        let (width, height) = (41u32, 17u32);
        let palette: Vec<[u8; 4]> = (0..200u32)
            .map(|idx| {
                [
                    idx as u8,
                    (idx * 3) as u8,
                    255 - idx as u8,
                    (idx * 2).min(255) as u8,
                ]
            })
            .collect();
        let indices: Vec<u8> = (0..width * height)
            .map(|idx| ((idx * 7 + idx / 41) % 200) as u8)
            .collect();
        let image = Indexed {
            indices: indices.clone(),
            palette: palette.clone(),
            tolerance: 0,
            bar_index: Vec::new(),
            grey_base: 0,
        };
        let png = encode_indexed(&image, width, height).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .unwrap();
        let info = reader.info();
        assert_eq!(info.color_type, png::ColorType::Indexed);
        let want_palette: Vec<u8> = palette.iter().flat_map(|c| [c[0], c[1], c[2]]).collect();
        assert_eq!(info.palette.as_deref(), Some(&want_palette[..]));
        // Entries from 128 on are opaque (alpha capped at 255), so tRNS stops there.
        let want_alphas: Vec<u8> = palette[..128].iter().map(|c| c[3]).collect();
        assert_eq!(info.trns.as_deref(), Some(&want_alphas[..]));
        let mut decoded = vec![0; reader.output_buffer_size().unwrap()];
        let frame = reader.next_frame(&mut decoded).unwrap();
        assert_eq!(&decoded[..frame.buffer_size()], indices.as_slice());
    }

    #[test]
    fn paeth_chooses_as_the_spec_does_for_every_neighbourhood() {
        // PNG spec 9.4, written as there.
        let spec = |left: u8, up: u8, up_left: u8| {
            let estimate = i16::from(left) + i16::from(up) - i16::from(up_left);
            let to_left = (estimate - i16::from(left)).abs();
            let to_up = (estimate - i16::from(up)).abs();
            let to_up_left = (estimate - i16::from(up_left)).abs();
            if to_left <= to_up && to_left <= to_up_left {
                left
            } else if to_up <= to_up_left {
                up
            } else {
                up_left
            }
        };
        for left in 0..=255 {
            for up in 0..=255 {
                for up_left in 0..=255 {
                    assert_eq!(paeth(left, up, up_left), spec(left, up, up_left));
                }
            }
        }
    }

    #[test]
    fn a_standard_decoder_reads_back_the_exact_pixels() {
        round_trip(3, 37, 23);
        round_trip(4, 64, 9);
        round_trip(3, 1, 1);
        // Several bands: 120 KiB of filtered bytes is 102 of these rows.
        round_trip(3, 400, 301);
        round_trip(4, 7000, 20);
    }

    #[test]
    fn the_bands_make_one_zlib_stream_with_the_right_checksum() {
        let (width, height) = (1000u32, 700u32);
        let bytes: Vec<u8> = (0..width * height)
            .map(|idx| ((idx % width) / 37 + (idx / width) / 53) as u8)
            .collect();
        let n_bands = (height as usize).div_ceil(BAND_BYTES / (width as usize + 1));
        assert!(n_bands >= 5, "{n_bands} bands");
        let idat = filter_and_compress(&bytes, 1, width, height);
        let mut zlib = Vec::new();
        idat.write_to(&mut zlib);
        assert_eq!(zlib.len(), idat.len());
        // fdeflate checks the Adler-32 (the png crate skips it by default).
        let filtered = fdeflate::decompress_to_vec(&zlib).unwrap();
        assert_eq!(filtered.len(), (width as usize + 1) * height as usize);
        for (y, row) in filtered.chunks_exact(width as usize + 1).enumerate() {
            assert_eq!(row[0], PAETH, "row {y}");
        }
        let mut wrong_checksum = zlib.clone();
        let last = wrong_checksum.len() - 1;
        wrong_checksum[last] ^= 1;
        assert!(fdeflate::decompress_to_vec(&wrong_checksum).is_err());
    }
}
