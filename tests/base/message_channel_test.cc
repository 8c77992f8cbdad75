#include "base/message_channel.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace lamina {
namespace {

TEST(MessageChannel, CarriesJsonAndDescriptors) {
  auto pair = MessageChannel::make_pair();
  ASSERT_TRUE(pair);
  auto& [left, right] = *pair;
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  UniqueFd read_end(pipe_fds[0]);
  UniqueFd write_end(pipe_fds[1]);
  const int fds[] = {write_end.get()};
  ASSERT_TRUE(left.send({{"op", "hello"}, {"n", 42}}, fds));
  auto received = right.receive(std::chrono::milliseconds(1000));
  ASSERT_TRUE(received);
  ASSERT_TRUE(*received);
  EXPECT_EQ((*received)->message["op"], "hello");
  EXPECT_EQ((*received)->message["n"], 42);
  ASSERT_EQ((*received)->fds.size(), 1u);
  // The passed descriptor is a new one for the same pipe: writing it reaches our read end.
  ASSERT_EQ(::write((*received)->fds[0].get(), "x", 1), 1);
  char byte = 0;
  ASSERT_EQ(::read(read_end.get(), &byte, 1), 1);
  EXPECT_EQ(byte, 'x');
  EXPECT_NE(::fcntl((*received)->fds[0].get(), F_GETFD) & FD_CLOEXEC, 0);
}

TEST(MessageChannel, TimeoutAndCloseAreNotErrors) {
  auto pair = MessageChannel::make_pair();
  ASSERT_TRUE(pair);
  auto& [left, right] = *pair;
  auto nothing = right.receive(std::chrono::milliseconds(10));
  ASSERT_TRUE(nothing);
  EXPECT_FALSE(*nothing);
  left.release().reset();
  auto closed = right.receive(std::chrono::milliseconds(1000));
  ASSERT_TRUE(closed);
  EXPECT_FALSE(*closed);
}

TEST(MessageChannel, RefusesOversizedAndMalformedMessages) {
  auto pair = MessageChannel::make_pair();
  ASSERT_TRUE(pair);
  auto& [left, right] = *pair;
  EXPECT_FALSE(left.send({{"blob", std::string(MessageChannel::kMaxMessageBytes, 'a')}}));
  // A hostile peer writes raw datagrams: not JSON, a JSON array, and one past the limit.
  const std::string garbage = "{not json";
  ASSERT_GT(::send(left.descriptor(), garbage.data(), garbage.size(), 0), 0);
  auto bad = right.receive(std::chrono::milliseconds(1000));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), ErrorCode::kCorrupt);
  const std::string array = "[1,2]";
  ASSERT_GT(::send(left.descriptor(), array.data(), array.size(), 0), 0);
  EXPECT_FALSE(right.receive(std::chrono::milliseconds(1000)));
  const std::string huge(MessageChannel::kMaxMessageBytes + 100, ' ');
  ASSERT_GT(::send(left.descriptor(), huge.data(), huge.size(), 0), 0);
  auto oversized = right.receive(std::chrono::milliseconds(1000));
  ASSERT_FALSE(oversized);
  EXPECT_EQ(oversized.error().code(), ErrorCode::kCorrupt);
}

}  // namespace
}  // namespace lamina
