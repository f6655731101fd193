//! Signal processing, one function per step as librosa names them: WAV decoding ([`audio`]),
//! resampling ([`resample`]), the mel filterbank ([`mel`]), trim / normalize / fix_length /
//! melspectrogram / power_to_db ([`features`]); what rooms and microphones do to a signal
//! ([`conditions`]); sounds that are not digits ([`negatives`]).

pub mod audio;
pub mod conditions;
pub mod features;
pub mod mel;
pub mod negatives;
pub mod resample;
