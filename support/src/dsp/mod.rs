//! Signal processing, one function per step as librosa names them: WAV decoding ([`audio`]),
//! resampling ([`resample`]), trim / normalize / fix_length ([`effects`]), the mel filterbank
//! ([`mel`]), melspectrogram / power_to_db and the whole pipeline ([`features`]); what rooms and
//! microphones do to a signal ([`conditions`]); sounds that are not digits ([`negatives`]).

pub mod audio;
pub mod conditions;
pub mod effects;
pub mod features;
pub mod mel;
pub mod negatives;
pub mod resample;
