//! PNG encoding tuned for heatmaps: rows filtered in parallel, then one fast DEFLATE pass.
//!
//! The `png` crate filters and compresses on one thread. Filtering is independent per row
//! (each row needs only itself and the row above), so it runs on every core here; the
//! filtered rows then go through `fdeflate`, the same compressor the `png` crate uses for
//! its fast setting. The container (signature, IHDR, IDAT, IEND with CRCs) is small
//! enough to write by hand.

use rayon::prelude::*;

use crate::render::Pixels;
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
    let channels = pixels.channels;
    let stride = width as usize * channels;
    let mut filtered = scratch::bytes(height as usize * (stride + 1), 0);
    filtered
        .par_chunks_mut(stride + 1)
        .enumerate()
        .for_each(|(y, out)| {
            let row = &pixels.bytes[y * stride..(y + 1) * stride];
            let above = (y > 0).then(|| &pixels.bytes[(y - 1) * stride..y * stride]);
            paeth_row(out, row, above, channels);
        });
    let compressed = compress(&filtered);
    scratch::recycle_bytes(filtered);
    let idat = compressed?;

    let colour_type = if channels == 4 { 6 } else { 2 };
    let mut png = Vec::with_capacity(idat.len() + 64);
    png.extend_from_slice(&SIGNATURE);
    let mut header = Vec::with_capacity(13);
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, colour_type, 0, 0, 0]);
    write_chunk(&mut png, b"IHDR", &header);
    write_chunk(&mut png, b"IDAT", &idat);
    write_chunk(&mut png, b"IEND", &[]);
    Ok(png)
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
    fn a_standard_decoder_reads_back_the_exact_pixels() {
        round_trip(3, 37, 23);
        round_trip(4, 64, 9);
        round_trip(3, 1, 1);
    }
}
