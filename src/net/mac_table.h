#pragma once
// MacTable: the virtual switch's forwarding database (IEEE 802.1D section 7.8, "filtering
// database"): which port a unicast MAC address was last seen on, with ageing. Pure logic with
// the time passed in, so tests drive it without sleeping.
//
// Ownership: a value owned by the switch daemon. Thread-safety: none (the daemon has one thread).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "net/mac_address.h"

namespace lamina::net {

using SwitchPortId = uint32_t;

class MacTable {
 public:
  using Clock = std::chrono::steady_clock;

  enum class Learned {
    kNew,        // a new entry
    kRefreshed,  // same port, timestamp renewed
    kMoved,      // the station now answers on another port
    kTableFull,  // not learned: the table holds `capacity` live entries (frames to it flood)
  };

  struct Entry {
    MacAddress address;
    SwitchPortId port = 0;
    Clock::duration age{};  // time since the address was last seen
  };

  // age: an entry unseen this long is forgotten (802.1D's default ageing time is 300 s).
  MacTable(Clock::duration age, size_t capacity) : age_(age), capacity_(capacity) {}

  // Records that `address` (a unicast source address) was seen on `port` at `now`.
  Learned learn(const MacAddress& address, SwitchPortId port, Clock::time_point now);
  // The port `address` was last seen on, unless the entry aged out.
  std::optional<SwitchPortId> lookup(const MacAddress& address, Clock::time_point now) const;
  // Forgets every address learned on `port` (it disconnected); returns how many.
  size_t forget_port(SwitchPortId port);
  // Drops aged entries; returns how many.
  size_t expire(Clock::time_point now);

  // Live entries sorted by port, then address.
  std::vector<Entry> entries(Clock::time_point now) const;
  size_t size() const { return table_.size(); }
  Clock::duration age() const { return age_; }
  size_t capacity() const { return capacity_; }

 private:
  struct Slot {
    SwitchPortId port;
    Clock::time_point last_seen;
  };
  bool expired(const Slot& slot, Clock::time_point now) const {
    return now - slot.last_seen >= age_;
  }

  Clock::duration age_;
  size_t capacity_;
  std::unordered_map<MacAddress, Slot, MacAddressHash> table_;
};

}  // namespace lamina::net
