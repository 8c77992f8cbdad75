#include "base/error.h"

#include <gtest/gtest.h>

namespace lamina {
namespace {

Result<int> half(int value) {
  if (value % 2 != 0) return fail(ErrorCode::kInvalidArgument, "odd value");
  return value / 2;
}

TEST(Result, CarriesValueOrError) {
  EXPECT_EQ(half(8).value(), 4);
  auto odd = half(3);
  ASSERT_FALSE(odd.has_value());
  EXPECT_EQ(odd.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(odd.error().message(), "odd value");
}

TEST(Error, ContextIsPrefixedAndCodeKept) {
  Error error(ErrorCode::kCorrupt, "bad checksum");
  Error outer = error.with_context("disk.vhd");
  EXPECT_EQ(outer.message(), "disk.vhd: bad checksum");
  EXPECT_EQ(outer.code(), ErrorCode::kCorrupt);
}

TEST(Error, EveryCodeHasAName) {
  for (auto code : {ErrorCode::kInvalidArgument, ErrorCode::kNotFound, ErrorCode::kIo,
                    ErrorCode::kCorrupt, ErrorCode::kUnsupported, ErrorCode::kNotImplemented,
                    ErrorCode::kGuestFatal, ErrorCode::kInternal}) {
    EXPECT_NE(to_string(code), "unknown error");
  }
}

}  // namespace
}  // namespace lamina
