//! Colour maps for log-Mel images and relevance maps, shared by the notebook and `predict
//! --explain` pictures.

/// Linear interpolation through evenly spaced RGB stops, `t` in [0, 1].
fn through(stops: &[[f32; 3]], t: f32) -> [u8; 3] {
    let x = t.clamp(0.0, 1.0) * (stops.len() - 1) as f32;
    let i = (x.floor() as usize).min(stops.len() - 2);
    let f = x - i as f32;
    let mix = |c: usize| (stops[i][c] + f * (stops[i + 1][c] - stops[i][c])).round() as u8;
    [mix(0), mix(1), mix(2)]
}

/// Black -> purple -> orange -> light yellow (after matplotlib's magma), `t` in [0, 1].
pub fn magma(t: f32) -> [u8; 3] {
    const STOPS: [[f32; 3]; 5] = [
        [0.0, 0.0, 4.0],
        [81.0, 18.0, 124.0],
        [183.0, 55.0, 121.0],
        [252.0, 137.0, 97.0],
        [252.0, 253.0, 191.0],
    ];
    through(&STOPS, t)
}

/// Blue (against the class, `t = -1`) -> white (0) -> red (for it, `t = 1`), after
/// ColorBrewer's RdBu: a diverging scale whose middle is "no relevance".
pub fn diverging(t: f32) -> [u8; 3] {
    const STOPS: [[f32; 3]; 5] = [
        [5.0, 48.0, 97.0],
        [67.0, 147.0, 195.0],
        [247.0, 247.0, 247.0],
        [214.0, 96.0, 77.0],
        [103.0, 0.0, 31.0],
    ];
    through(&STOPS, (t + 1.0) / 2.0)
}

/// A relevance value `r` in [-1, 1] laid over a grey log-Mel cell `level` in [0, 1] (loud is
/// dark, silence near white): the grey shows through where the relevance is small.
pub fn overlay(level: f32, r: f32) -> [u8; 3] {
    let grey = 255.0 * (0.97 - 0.6 * level.clamp(0.0, 1.0));
    let colour = diverging(r.signum());
    let a = r.abs().clamp(0.0, 1.0).sqrt();
    colour.map(|c| (grey + a * (c as f32 - grey)).round() as u8)
}

/// `values` scaled to [0, 1] by their range (constant images: 0).
pub fn unit_range(values: &[f32]) -> Vec<f32> {
    let (lo, hi) = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let span = (hi - lo).max(1e-6);
    values.iter().map(|v| (v - lo) / span).collect()
}

/// `values` divided by their largest magnitude, into [-1, 1] with 0 kept at 0.
pub fn symmetric(values: &[f32]) -> Vec<f32> {
    let peak = values.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    values.iter().map(|v| v / peak).collect()
}

/// An `n_mels x n_frames` image as RGB bytes: low bands at the bottom, each band as many pixel
/// rows as make about 128 (one for 128 bands, three for 40), each frame `frame_px` pixels
/// wide. Returns (width, height, pixels).
pub fn cells_rgb(
    n_mels: usize,
    n_frames: usize,
    frame_px: usize,
    cell: impl Fn(usize) -> [u8; 3],
) -> (usize, usize, Vec<u8>) {
    let band_px = (128 / n_mels.max(1)).max(1);
    let (w, h) = (n_frames * frame_px, n_mels * band_px);
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let band = n_mels - 1 - y / band_px;
        for x in 0..w {
            rgb.extend_from_slice(&cell(band * n_frames + x / frame_px));
        }
    }
    (w, h, rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_end_where_they_should() {
        assert_eq!(magma(0.0), [0, 0, 4]);
        assert_eq!(magma(1.0), [252, 253, 191]);
        assert_eq!(magma(2.0), [252, 253, 191]);
        assert_eq!(diverging(0.0), [247, 247, 247]);
        assert_eq!(diverging(-1.0), [5, 48, 97]);
        assert_eq!(diverging(1.0), [103, 0, 31]);
        // No relevance: the grey log-Mel; full relevance: the pure colour.
        let g = overlay(1.0, 0.0);
        assert!(g[0] == g[1] && g[1] == g[2]);
        assert_eq!(overlay(0.3, 1.0), diverging(1.0));
        assert_eq!(symmetric(&[-2.0, 1.0]), vec![-1.0, 0.5]);
    }

    #[test]
    fn low_bands_are_at_the_bottom() {
        // 2 bands x 1 frame: band 0 black, band 1 white, each 64 rows of 3 pixels.
        let (w, h, rgb) = cells_rgb(2, 1, 3, |i| if i == 0 { [0; 3] } else { [255; 3] });
        assert_eq!((w, h), (3, 128));
        assert_eq!(&rgb[..3], &[255, 255, 255]);
        assert_eq!(&rgb[63 * 9..63 * 9 + 3], &[255, 255, 255]);
        assert_eq!(&rgb[64 * 9..64 * 9 + 3], &[0, 0, 0]);
        // 128 bands: one row each.
        assert_eq!(cells_rgb(128, 32, 1, |_| [0; 3]).1, 128);
    }
}
