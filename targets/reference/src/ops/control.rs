//! Control flow (If, Loop, Scan), sequences, optionals, strings and random ops.

use crate::interp::not_yet_evaluated;

not_yet_evaluated!(
    Bernoulli,
    ConcatFromSequence,
    If,
    ImageDecoder,
    Loop,
    Multinomial,
    Optional,
    OptionalGetElement,
    OptionalHasElement,
    RandomNormal,
    RandomNormalLike,
    RandomUniform,
    RandomUniformLike,
    RegexFullMatch,
    Scan,
    SequenceAt,
    SequenceConstruct,
    SequenceEmpty,
    SequenceErase,
    SequenceInsert,
    SequenceLength,
    SequenceMap,
    SplitToSequence,
    StringConcat,
    StringNormalizer,
    StringSplit,
    TfIdfVectorizer,
);
