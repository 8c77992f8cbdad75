// parse_host_port: laminad's --listen and a migration's destination.
#include "mgmt/host_port.h"

#include <gtest/gtest.h>

namespace lamina::mgmt {
namespace {

TEST(HostPort, NamesAddressesAndBracketedIpv6) {
  EXPECT_EQ(parse_host_port("127.0.0.1:8443"), (std::pair<std::string, uint16_t>{"127.0.0.1", 8443}));
  EXPECT_EQ(parse_host_port("host.example:0"), (std::pair<std::string, uint16_t>{"host.example", 0}));
  EXPECT_EQ(parse_host_port("[::1]:65535"), (std::pair<std::string, uint16_t>{"::1", 65535}));
}

TEST(HostPort, RefusesWhatIsNotHostColonPort) {
  for (const char* text : {"", "nowhere", ":80", "host:", "host:65536", "host:8x", "host:-1",
                           "host:123456", "[]:80", "host: 80"}) {
    EXPECT_FALSE(parse_host_port(text).has_value()) << text;
  }
}

}  // namespace
}  // namespace lamina::mgmt
