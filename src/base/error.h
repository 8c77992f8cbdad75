#pragma once
// Errors as values at module boundaries: Result<T> is std::expected<T, Error>.

#include <expected>
#include <string>
#include <string_view>
#include <utility>

namespace lamina {

// Broad classes of failure shared by every subsystem; the message carries the specifics a
// user can act on (which file, which flag, which field).
enum class ErrorCode {
  kInvalidArgument,  // bad flag, bad API body, bad configuration
  kNotFound,         // a file or object that should exist does not
  kIo,               // the host refused a read, write, flush or mapping
  kCorrupt,          // a file's content contradicts its format
  kUnsupported,      // valid input that Lamina does not handle (yet)
  kNotImplemented,   // a capability that is reserved but not built
  kGuestFatal,       // the guest put the VM in a state it cannot continue from
  kInternal,         // a bug in Lamina
};

std::string_view to_string(ErrorCode code);

// One failure: its class and a message naming what is wrong.
class [[nodiscard]] Error {
 public:
  Error(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // Prefixes context ("disk.vhd: ") so an error bubbling up names where it came from.
  Error with_context(std::string_view context) const;

 private:
  ErrorCode code_;
  std::string message_;
};

template <typename T>
using Result = std::expected<T, Error>;

// Shorthand for returning a failure: `return fail(ErrorCode::kCorrupt, "...")`.
inline std::unexpected<Error> fail(ErrorCode code, std::string message) {
  return std::unexpected<Error>(Error(code, std::move(message)));
}

// Builds "Error::with_context" failures from an existing error.
inline std::unexpected<Error> fail(const Error& error) { return std::unexpected<Error>(error); }

}  // namespace lamina
