//! Text ↔ token ids. Hub and folder models use their `tokenizer.json`; GGUF models get a byte-level BPE built
//! from the file's own vocabulary and merges (candle's GGUF tokenizer ignores `add_space_prefix=false`).
use std::path::Path;

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

use crate::{Error, Result};

/// A tokenizer plus the model's BOS policy.
#[derive(Clone)]
pub struct Tokenizer {
    inner: HfTokenizer,
    /// Prepended to every prompt when the model's tokenizer config asks for it.
    pub bos: Option<u32>,
    /// The model's context in tokens, when the tokenizer was loaded with its model ([`crate::model::load`]): a
    /// fact whose prompt is longer is refused when it is tokenised, where its file and line are known, not
    /// later in a batch of prompts.
    pub max_tokens: Option<usize>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer(vocab={}, bos={:?})", self.inner.get_vocab_size(true), self.bos)
    }
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`. `bos` is the id to prepend, if the model's config asks for one.
    pub fn from_file(path: &Path, bos: Option<u32>) -> Result<Self> {
        let inner = HfTokenizer::from_file(path).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self { inner, bos, max_tokens: None })
    }

    /// Builds a byte-level BPE from GGUF metadata (`tokenizer.ggml.*`).
    ///
    /// `pre` is `tokenizer.ggml.pre`: `smollm` (and other digit-splitting variants) split every digit on its
    /// own before the GPT-2 byte-level split; anything else uses the plain GPT-2 split.
    pub fn from_bpe_parts(tokens: Vec<String>, merges: Vec<String>, control: Vec<String>, pre: &str, bos: Option<u32>) -> Result<Self> {
        let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| Error::Tokenizer(format!("bad merge `{m}`")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(tok_err)?;
        let mut inner = HfTokenizer::new(bpe);
        let byte_level = ByteLevel::new(false, true, true);
        let split_digits = matches!(pre, "smollm" | "qwen2" | "deepseek-llm" | "starcoder" | "refact" | "smaug-bpe");
        if split_digits {
            let seq = Sequence::new(vec![PreTokenizerWrapper::Digits(Digits::new(true)), PreTokenizerWrapper::ByteLevel(byte_level)]);
            inner.with_pre_tokenizer(Some(seq));
        } else {
            inner.with_pre_tokenizer(Some(byte_level));
        }
        inner.with_decoder(Some(ByteLevel::default()));
        let specials: Vec<AddedToken> = control.into_iter().map(|t| AddedToken::from(t, true)).collect();
        inner.add_special_tokens(&specials);
        Ok(Self { inner, bos, max_tokens: None })
    }

    /// Token ids of `text` (with the BOS, if the model asks for one).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(tok_err)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        ids.extend(self.bos);
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Token ids of `text` (with the BOS, if the model asks for one) and each token's byte range in `text`
    /// (the BOS gets the empty range `0..0`): what locates a fact's subject among its prompt's tokens.
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<std::ops::Range<usize>>)> {
        let enc = self.inner.encode(text, false).map_err(tok_err)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        let mut ranges = Vec::with_capacity(enc.len() + 1);
        if let Some(b) = self.bos {
            ids.push(b);
            ranges.push(0..0);
        }
        ids.extend_from_slice(enc.get_ids());
        ranges.extend(enc.get_offsets().iter().map(|&(a, b)| a..b));
        Ok((ids, ranges))
    }

    /// Token ids of `text` without BOS (for answer tokens).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, false).map_err(tok_err)?.get_ids().to_vec())
    }

    /// The text of one token, as it would print.
    pub fn token_text(&self, id: u32) -> String {
        self.inner.decode(&[id], false).ok().or_else(|| self.inner.id_to_token(id)).unwrap_or_else(|| format!("<{id}>"))
    }

    /// Writes the tokenizer as a Hugging Face `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner.save(path, false).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The largest token id (added tokens included); `None` for an empty vocabulary.
    pub fn max_id(&self) -> Option<u32> {
        self.inner.get_vocab(true).into_values().max()
    }
}
