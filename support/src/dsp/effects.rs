//! Time-domain steps on the signal at the analysis rate, as librosa names them:
//! `librosa.effects.trim` ([`trim_bounds`]), `librosa.util.normalize` ([`normalize`]),
//! `librosa.util.fix_length` ([`fix_length`]).

/// `librosa.effects.trim(y, top_db, frame_length, hop_length)` bounds: `[start, end)` in samples.
///
/// Frame energies are `librosa.feature.rms` with centred, zero-padded frames; a frame is kept
/// when `10*log10(mean_square / max_mean_square) > -top_db` (with librosa's amin of 1e-10 on
/// both). The kept span runs from the first kept frame's sample to the end of the last one,
/// capped at the signal length. A signal with no kept frame gives `(0, 0)`; an all-zero
/// signal keeps everything, as in librosa (both sides clamp to amin).
pub fn trim_bounds(y: &[f32], top_db: f32, frame_length: usize, hop_length: usize) -> (usize, usize) {
    let Some(db) = frame_db(y, frame_length, hop_length) else { return (0, y.len()) };
    let keep = |v: &f64| *v > -(top_db as f64);
    match (db.iter().position(keep), db.iter().rposition(keep)) {
        (Some(first), Some(last)) => (first * hop_length, ((last + 1) * hop_length).min(y.len())),
        _ => (0, 0),
    }
}

/// Finding the word in a room (ours, not librosa's): what [`word_bounds`] adds to the trim.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WordTrim {
    /// A kept frame must also rise this many dB above the quietest frame (the room's floor).
    pub floor_margin_db: f32,
    /// Kept frames join the loudest one's run across quiet gaps up to this long (a stop's
    /// closure inside a word is under 0.15 s); farther ones (a click, a bump, a breath) go.
    pub max_gap_s: f32,
    /// The floor counts only when this long a run of frames lies within `floor_margin_db` of
    /// it: a room shows itself before or after the word, while a tightly cut word's quietest
    /// frame is a lone edge frame or a consonant (0: any quietest frame, as files before it).
    #[serde(default)]
    pub min_room_s: f32,
}

impl WordTrim {
    /// What `best` uses (support/RESULTS.md, "Finding the word in a noisy room" and "A room
    /// must last").
    pub const ROOM: WordTrim = WordTrim { floor_margin_db: 6.0, max_gap_s: 0.2, min_room_s: 0.2 };

    pub fn is_valid(&self) -> bool {
        self.floor_margin_db.is_finite()
            && self.floor_margin_db >= 0.0
            && self.max_gap_s.is_finite()
            && self.max_gap_s >= 0.0
            && self.min_room_s.is_finite()
            && self.min_room_s >= 0.0
    }
}

/// The word's `[start, end)` in samples: [`trim_bounds`]'s frames, kept when above `-top_db`
/// and `trim.floor_margin_db` above the quietest frame (when `trim.min_room_s` of frames lie
/// that close to it), and only the loudest frame's run with the runs it reaches across gaps
/// of at most `trim.max_gap_s`. In a noisy room librosa's
/// trim keeps all the noise that sits less than `top_db` below the word, and a click far
/// from the word stretches the span; the word then fills only part of the frames.
/// Digital silence puts the floor at amin, and a clean word's span is librosa's.
pub fn word_bounds(
    y: &[f32],
    top_db: f32,
    trim: WordTrim,
    sample_rate: u32,
    frame_length: usize,
    hop_length: usize,
) -> (usize, usize) {
    let Some(db) = frame_db(y, frame_length, hop_length) else { return (0, y.len()) };
    let floor = db.iter().cloned().fold(f64::INFINITY, f64::min);
    let frames = |s: f32| (s as f64 * sample_rate as f64 / hop_length as f64).floor() as usize;
    let margin = floor + trim.floor_margin_db as f64;
    // A clip with no part that much quieter than its peak (all word, or all noise), or with
    // no stretch of room that long, has no floor to go by.
    let room = longest_run(&db, |v| v <= margin) >= frames(trim.min_room_s);
    let above_floor = Some(margin).filter(|t| *t < 0.0 && room);
    let threshold = above_floor.map_or(-(top_db as f64), |t| t.max(-(top_db as f64)));
    let keep: Vec<bool> = db.iter().map(|v| *v > threshold).collect();
    let Some(peak) = db.iter().position(|v| *v >= 0.0) else { return (0, 0) };
    let gap = frames(trim.max_gap_s);
    let (mut first, mut last) = (peak, peak);
    while let Some(next) = (last + 1..(last + gap + 2).min(keep.len())).rev().find(|&i| keep[i]) {
        last = next;
    }
    while let Some(prev) = (first.saturating_sub(gap + 1)..first).find(|&i| keep[i]) {
        first = prev;
    }
    (first * hop_length, ((last + 1) * hop_length).min(y.len()))
}

/// The most consecutive values for which `inside` holds.
fn longest_run(values: &[f64], inside: impl Fn(f64) -> bool) -> usize {
    let (mut best, mut run) = (0, 0);
    for v in values {
        run = if inside(*v) { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

/// Each centred, zero-padded frame's energy in dB below the loudest frame (amin 1e-10), or
/// `None` when the signal is shorter than half a frame on each side.
fn frame_db(y: &[f32], frame_length: usize, hop_length: usize) -> Option<Vec<f64>> {
    let n = y.len();
    let half = frame_length / 2;
    let padded_len = n + 2 * half;
    if padded_len < frame_length {
        return None;
    }
    let n_frames = 1 + (padded_len - frame_length) / hop_length;
    // Sum of squares over signal range [lo, hi) (zero padding adds nothing). With the usual
    // frame = 4 hops and half = 2 hops, a frame is a sum of whole hop-sized blocks, so sum
    // each block once (8 independent lanes, so it vectorises) instead of every frame anew.
    let block_sums: Vec<f64> = y.chunks(hop_length).map(sum_sq).collect();
    let aligned = frame_length % hop_length == 0 && half % hop_length == 0;
    let mean_sq: Vec<f64> = (0..n_frames)
        .map(|t| {
            // padded index p maps to signal index p - half
            let lo = (t * hop_length).saturating_sub(half).min(n);
            let hi = (t * hop_length + frame_length).saturating_sub(half).min(n);
            let total = if aligned {
                block_sums[lo / hop_length..hi.div_ceil(hop_length)].iter().sum::<f64>()
            } else {
                sum_sq(&y[lo..hi])
            };
            total / frame_length as f64
        })
        .collect();
    const AMIN: f64 = 1e-10;
    let max = mean_sq.iter().cloned().fold(0f64, f64::max).max(AMIN);
    Some(mean_sq.iter().map(|ms| 10.0 * (ms.max(AMIN) / max).log10()).collect())
}

fn sum_sq(x: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = x.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|v| (*v as f64) * (*v as f64)).sum();
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += (*v as f64) * (*v as f64);
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// `librosa.util.normalize(y)` (norm=inf): divide by the peak magnitude. A silent signal
/// (peak below f32's smallest normal number) is left as it is instead of becoming NaN.
pub fn normalize(y: &mut [f32]) {
    let peak = y.iter().fold(0f32, |m, s| m.max(s.abs()));
    if peak >= f32::MIN_POSITIVE {
        let inv = 1.0 / peak as f64;
        for s in y.iter_mut() {
            *s = (*s as f64 * inv) as f32;
        }
    }
}

/// `librosa.util.fix_length(y, size=n)`: zero-pad at the end or truncate.
pub fn fix_length(mut y: Vec<f32>, n: usize) -> Vec<f32> {
    y.resize(n, 0.0);
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_keeps_the_loud_part() {
        let mut y = vec![0.0f32; 16000];
        for (i, v) in y[6000..9000].iter_mut().enumerate() {
            *v = (i as f32 * 0.3).sin();
        }
        let (s, e) = trim_bounds(&y, 20.0, 2048, 512);
        assert!(s <= 6000 && s >= 6000 - 2048, "{s}");
        assert!(e >= 9000 && e <= 9000 + 2048, "{e}");
    }

    fn lcg_noise(n: usize, scale: f32) -> Vec<f32> {
        let mut state = 12345u32;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                scale * ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
            })
            .collect()
    }

    fn tone(y: &mut [f32], amp: f32) {
        for (i, v) in y.iter_mut().enumerate() {
            *v += amp * (i as f32 * 0.3).sin();
        }
    }

    /// A word in steady noise 14 dB below it: librosa's trim keeps the whole clip, the
    /// word trim keeps the word (within a frame).
    #[test]
    fn word_trim_cuts_a_noisy_room() {
        let mut y = lcg_noise(16000, 0.25);
        tone(&mut y[6000..9000], 0.5);
        assert_eq!(trim_bounds(&y, 20.0, 2048, 512), (0, 16000));
        let (s, e) = word_bounds(&y, 20.0, WordTrim::ROOM, 16000, 2048, 512);
        assert!((6000 - 2048..=6000).contains(&s), "{s}");
        assert!((9000..=9000 + 2048).contains(&e), "{e}");
    }

    /// A tightly cut word that fades (FSDD's recordings): its quietest frame is its own tail,
    /// not a room, so the span is librosa's; taking that frame as the floor (files before
    /// `min_room_s`) cut the fading end.
    #[test]
    fn word_trim_keeps_a_tightly_cut_words_fading_end() {
        let n = 6000;
        let mut y = vec![0.0f32; n];
        tone(&mut y, 1.0);
        y.iter_mut().enumerate().for_each(|(i, v)| *v *= 1.0 - 0.8 * i as f32 / n as f32);
        let librosa = trim_bounds(&y, 20.0, 2048, 512);
        assert_eq!(librosa, (0, n));
        assert_eq!(word_bounds(&y, 20.0, WordTrim::ROOM, 16000, 2048, 512), librosa);
        let any_floor = WordTrim { min_room_s: 0.0, ..WordTrim::ROOM };
        assert!(word_bounds(&y, 20.0, any_floor, 16000, 2048, 512).1 < n - 1000);
    }

    /// A click 0.4 s before the word goes; a second part 0.1 s after it stays (a stop's
    /// closure); on a clean word the span is librosa's.
    #[test]
    fn word_trim_drops_far_clicks_and_keeps_closures() {
        let mut y = vec![0.0f32; 24000];
        tone(&mut y[1000..1400], 1.0);
        tone(&mut y[9000..13000], 1.0);
        tone(&mut y[14600..16000], 0.5);
        let (s, e) = word_bounds(&y, 20.0, WordTrim::ROOM, 16000, 2048, 512);
        assert!((9000 - 2048..=9000).contains(&s), "{s}");
        assert!((16000..=16000 + 2048).contains(&e), "{e}");
        assert!(trim_bounds(&y, 20.0, 2048, 512).0 <= 1000);
        let mut z = vec![0.0f32; 16000];
        tone(&mut z[6000..9000], 1.0);
        assert_eq!(word_bounds(&z, 20.0, WordTrim::ROOM, 16000, 2048, 512), trim_bounds(&z, 20.0, 2048, 512));
        // Nothing quieter than the rest: everything stays, as in librosa.
        for flat in [vec![0.0f32; 16000], vec![0.5f32; 16000]] {
            assert_eq!(word_bounds(&flat, 20.0, WordTrim::ROOM, 16000, 2048, 512), (0, 16000));
        }
    }

    #[test]
    fn normalize_peaks_at_one() {
        let mut y = vec![0.1, -0.5, 0.25];
        normalize(&mut y);
        assert_eq!(y, vec![0.2, -1.0, 0.5]);
    }
}
