//! The screenshot drawn under the heat in background mode.

use std::path::Path;

use crate::Error;

/// An RGB image fitted to the output size.
#[derive(Debug, Clone)]
pub struct Background {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Background {
    /// Loads a PNG and scales it (bilinear) to `width` x `height`.
    ///
    /// # Errors
    /// [`Error::Background`] if the file cannot be read or is not a PNG this can use.
    pub fn load(path: &Path, width: u32, height: u32) -> Result<Self, Error> {
        let fail = |why: String| Error::Background {
            path: path.to_owned(),
            why,
        };
        let file = std::fs::File::open(path).map_err(|err| fail(err.to_string()))?;
        let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().map_err(|err| fail(err.to_string()))?;
        let size = reader
            .output_buffer_size()
            .ok_or_else(|| fail("image too large".into()))?;
        let mut pixels = vec![0; size];
        let info = reader
            .next_frame(&mut pixels)
            .map_err(|err| fail(err.to_string()))?;
        let channels = match info.color_type {
            png::ColorType::Grayscale => 1,
            png::ColorType::GrayscaleAlpha => 2,
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            png::ColorType::Indexed => return Err(fail("indexed colour was not expanded".into())),
        };
        let rgb: Vec<u8> = pixels[..info.buffer_size()]
            .chunks_exact(channels)
            .flat_map(|pixel| match channels {
                1 | 2 => [pixel[0]; 3],
                _ => [pixel[0], pixel[1], pixel[2]],
            })
            .collect();
        Ok(Background {
            width: info.width,
            height: info.height,
            rgb,
        }
        .fitted(width, height))
    }

    /// A plain colour, for tests and as a neutral backdrop.
    pub fn solid(width: u32, height: u32, colour: [u8; 3]) -> Self {
        Background {
            width,
            height,
            rgb: colour.repeat(width as usize * height as usize),
        }
    }

    /// Width and height in pixels.
    pub(crate) fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The pixels, row-major RGB.
    pub(crate) fn rgb(&self) -> &[u8] {
        &self.rgb
    }

    /// This image scaled to `width` x `height` (bilinear).
    pub(crate) fn fitted(&self, width: u32, height: u32) -> Background {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        let (src_w, src_h) = (self.width as usize, self.height as usize);
        let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
        for y in 0..height as usize {
            let fy = ((y as f32 + 0.5) * src_h as f32 / height as f32 - 0.5)
                .clamp(0.0, (src_h - 1) as f32);
            let (y0, ty) = (fy.floor() as usize, fy.fract());
            let y1 = (y0 + 1).min(src_h - 1);
            for x in 0..width as usize {
                let fx = ((x as f32 + 0.5) * src_w as f32 / width as f32 - 0.5)
                    .clamp(0.0, (src_w - 1) as f32);
                let (x0, tx) = (fx.floor() as usize, fx.fract());
                let x1 = (x0 + 1).min(src_w - 1);
                for channel in 0..3 {
                    let at =
                        |x: usize, y: usize| f32::from(self.rgb[(y * src_w + x) * 3 + channel]);
                    let top = at(x0, y0) * (1.0 - tx) + at(x1, y0) * tx;
                    let low = at(x0, y1) * (1.0 - tx) + at(x1, y1) * tx;
                    rgb.push((top * (1.0 - ty) + low * ty).round() as u8);
                }
            }
        }
        Background { width, height, rgb }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitting_keeps_colours_and_changes_size() {
        let fitted = Background::solid(10, 5, [1, 2, 3]).fitted(40, 20);
        assert_eq!(fitted.rgb().len(), 40 * 20 * 3);
        assert!(fitted.rgb().chunks_exact(3).all(|pixel| pixel == [1, 2, 3]));
    }

    #[test]
    fn a_missing_file_is_a_clear_error() {
        let err = Background::load(Path::new("/nonexistent/shot.png"), 10, 10).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/shot.png"), "{err}");
    }
}
