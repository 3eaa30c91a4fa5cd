//! Typed operations a shard executes on its own core. Each family parses nothing and
//! encodes nothing: the connection layer turns a command into one of these calls and the
//! result into a reply.

pub mod keys;
pub mod string;

/// What an operation can refuse. The connection layer owns the wording of the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpError {
    /// The key holds a value of another type.
    WrongType,
    /// The stored value is not an integer, or is out of range.
    NotInteger,
    /// The stored value is not a valid float.
    NotFloat,
    /// The result of an increment would overflow.
    Overflow,
    /// The result of INCRBYFLOAT is NaN or infinite.
    NanOrInfinity,
    /// The string would grow past the configured maximum.
    StringTooLong,
    /// RENAME or COPY of a key that does not exist.
    NoSuchKey,
}

pub type OpResult<T> = Result<T, OpError>;
