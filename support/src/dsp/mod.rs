//! Signal processing, one function per step as librosa names them: WAV decoding and
//! resampling ([`audio`]), the mel filterbank ([`mel`]), trim / normalize / fix_length /
//! melspectrogram / power_to_db ([`features`]).

pub mod audio;
pub mod features;
pub mod mel;
