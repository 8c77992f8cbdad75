#include "net/mac_table.h"

#include <algorithm>

namespace lamina::net {

MacTable::Learned MacTable::learn(const MacAddress& address, SwitchPortId port,
                                  Clock::time_point now) {
  auto found = table_.find(address);
  if (found != table_.end()) {
    Learned result = found->second.port == port ? Learned::kRefreshed : Learned::kMoved;
    found->second = {port, now};
    return result;
  }
  // Room first comes from aged entries, so a full table of stale stations still learns.
  if (table_.size() >= capacity_ && expire(now) == 0) return Learned::kTableFull;
  table_.emplace(address, Slot{port, now});
  return Learned::kNew;
}

std::optional<SwitchPortId> MacTable::lookup(const MacAddress& address,
                                             Clock::time_point now) const {
  auto found = table_.find(address);
  if (found == table_.end() || expired(found->second, now)) return std::nullopt;
  return found->second.port;
}

size_t MacTable::forget_port(SwitchPortId port) {
  return std::erase_if(table_, [port](const auto& item) { return item.second.port == port; });
}

size_t MacTable::expire(Clock::time_point now) {
  return std::erase_if(table_, [&](const auto& item) { return expired(item.second, now); });
}

std::vector<MacTable::Entry> MacTable::entries(Clock::time_point now) const {
  std::vector<Entry> result;
  for (const auto& [address, slot] : table_) {
    if (!expired(slot, now)) result.push_back({address, slot.port, now - slot.last_seen});
  }
  std::sort(result.begin(), result.end(), [](const Entry& a, const Entry& b) {
    return a.port != b.port ? a.port < b.port : a.address < b.address;
  });
  return result;
}

}  // namespace lamina::net
