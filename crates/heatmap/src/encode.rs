//! PNG encoding tuned for heatmaps: rows filtered in parallel, then one fast DEFLATE pass.
//!
//! Heatmaps on white or on transparency are written as indexed PNGs (one byte a pixel and
//! a palette, [`encode_indexed`]); heat over a screenshot needs every colour and is RGB.
//!
//! The `png` crate filters and compresses on one thread. Filtering is independent per row
//! (each row needs only itself and the row above), so it runs on every core here; the
//! filtered rows then go through `fdeflate`, the same compressor the `png` crate uses for
//! its fast setting. The container (signature, IHDR, IDAT, IEND with CRCs) is small
//! enough to write by hand.

use rayon::prelude::*;

use crate::render::{Indexed, Pixels};
use crate::scratch;
use crate::Error;

/// PNG's eight-byte signature.
const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// The row filter type byte for Paeth (PNG spec 9.4): the best of the five filters on
/// smooth gradients, and exact zeros on flat background.
const PAETH: u8 = 4;

/// Encodes RGB or RGBA pixels as an 8-bit PNG.
///
/// # Errors
/// [`Error::Encode`] if the compressor fails (it writes to memory, so only on a bug).
pub fn encode_png(pixels: &Pixels, width: u32, height: u32) -> Result<Vec<u8>, Error> {
    let colour_type = if pixels.channels == 4 { 6 } else { 2 };
    let idat = filter_and_compress(&pixels.bytes, pixels.channels, width, height)?;
    Ok(container(width, height, colour_type, &[], &idat))
}

/// Encodes palette indices as an 8-bit indexed PNG: a `PLTE` chunk with the colours, and a
/// `tRNS` chunk with their opacities when any entry is not opaque.
///
/// # Errors
/// [`Error::Encode`] if the compressor fails (it writes to memory, so only on a bug).
pub fn encode_indexed(image: &Indexed, width: u32, height: u32) -> Result<Vec<u8>, Error> {
    let idat = filter_and_compress(&image.indices, 1, width, height)?;
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

/// Paeth-filters the rows on every core, then deflates them in one zlib stream.
fn filter_and_compress(
    bytes: &[u8],
    bytes_per_pixel: usize,
    width: u32,
    height: u32,
) -> Result<Vec<u8>, Error> {
    let stride = width as usize * bytes_per_pixel;
    let mut filtered = scratch::bytes(height as usize * (stride + 1), 0);
    filtered
        .par_chunks_mut(stride + 1)
        .enumerate()
        .for_each(|(y, out)| {
            let row = &bytes[y * stride..(y + 1) * stride];
            let above = (y > 0).then(|| &bytes[(y - 1) * stride..y * stride]);
            paeth_row(out, row, above, bytes_per_pixel);
        });
    let compressed = compress(&filtered);
    scratch::recycle_bytes(filtered);
    compressed
}

/// The PNG file around compressed image data: signature, `IHDR`, the extra chunks
/// (palette, transparency), `IDAT`, `IEND`.
fn container(
    width: u32,
    height: u32,
    colour_type: u8,
    chunks: &[(&[u8; 4], &[u8])],
    idat: &[u8],
) -> Vec<u8> {
    let extra: usize = chunks.iter().map(|(_, data)| data.len() + 12).sum();
    let mut png = Vec::with_capacity(idat.len() + extra + 64);
    png.extend_from_slice(&SIGNATURE);
    let mut header = Vec::with_capacity(13);
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, colour_type, 0, 0, 0]);
    write_chunk(&mut png, b"IHDR", &header);
    for (kind, data) in chunks {
        write_chunk(&mut png, kind, data);
    }
    write_chunk(&mut png, b"IDAT", idat);
    write_chunk(&mut png, b"IEND", &[]);
    png
}

fn compress(filtered: &[u8]) -> Result<Vec<u8>, Error> {
    let mut compressor = fdeflate::Compressor::new(Vec::with_capacity(filtered.len() / 8))?;
    compressor.write_data(filtered)?;
    Ok(compressor.finish()?)
}

/// Writes one chunk: length, type, data, CRC of type and data.
fn write_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    // Our images are at most 8192x8192x4 bytes before compression, far below 2^31.
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
            for idx in channels..row.len() {
                let predicted = paeth(row[idx - channels], above[idx], above[idx - channels]);
                out[idx] = row[idx].wrapping_sub(predicted);
            }
        }
    }
}

/// The Paeth predictor of the PNG spec: the neighbour closest to `left + up - up_left`.
fn paeth(left: u8, up: u8, up_left: u8) -> u8 {
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
    fn a_standard_decoder_reads_back_the_exact_pixels() {
        round_trip(3, 37, 23);
        round_trip(4, 64, 9);
        round_trip(3, 1, 1);
    }
}
