#include "mgmt/incoming_migration.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "machine/machine_builder.h"
#include "machine/vm_definition.h"
#include "migration/machine_state.h"
#include "migration/migration_protocol.h"

namespace lamina::mgmt {

using migration::kPageBytes;
using migration::MessageType;

namespace {

std::vector<std::byte> refusal(const std::string& why) {
  return migration::make_json_message(MessageType::kRefuse, {{"error", why}});
}

}  // namespace

IncomingMigration::IncomingMigration(VmService& service, std::string name,
                                     std::vector<RamRegion> regions, UniqueFd state)
    : service_(service), name_(std::move(name)), regions_(std::move(regions)), state_(std::move(state)) {
  for (const RamRegion& region : regions_) ram_length_ += region.size;
}

IncomingMigration::~IncomingMigration() {
  if (started_) return;
  // Nothing of an unfinished migration stays: the definition it created goes.
  service_.mark_incoming(name_, false);
  (void)service_.remove(name_, false);
  service_.record_event(name_, "migration", {{"phase", "failed"}, {"direction", "incoming"},
                                              {"error", "the migration ended before the VM started here"}});
}

IncomingMigration::Opened IncomingMigration::offer(VmService& service,
                                                   std::span<const std::byte> message) {
  auto type = migration::message_type(message);
  if (!type || *type != MessageType::kOffer) return {nullptr, refusal("expected an offer first")};
  auto body = migration::message_json(message);
  if (!body) return {nullptr, refusal(body.error().message())};
  const std::string name = body->value("name", std::string());
  if (!body->contains("definition") || !(*body)["definition"].is_object()) {
    return {nullptr, refusal("the offer has no definition")};
  }
  const nlohmann::json& definition = (*body)["definition"];
  if (definition.value("accel", std::string("emu")) == "kvm") {
    return {nullptr, refusal("this laminad takes live migrations on the built-in CPU only")};
  }
  // The RAM layout comes from the definition, as the worker that restores will build it; the
  // offer's own figure must agree (the restore checks every detail again).
  auto config = machine::vm_config_from_definition(definition, machine::HostChecks::kNone);
  if (!config) return {nullptr, refusal(config.error().message())};
  const uint64_t memory_bytes = config->memory_bytes;
  if (body->value("memory_bytes", uint64_t{0}) != memory_bytes) {
    return {nullptr, refusal("the offer's memory size does not match its definition")};
  }
  auto layout = machine::machine_memory_layout(memory_bytes, config->max_memory_bytes);
  if (!layout) return {nullptr, refusal(layout.error().message())};
  nlohmann::json create{{"name", name},
                        {"definition", definition},
                        {"autostart", body->value("autostart", false)},
                        {"on_crash", body->value("on_crash", std::string("stay"))}};
  // Shared storage: this host must see every disk where the source does (the source holds
  // their locks until the switchover, so they are not opened yet).
  for (const auto& disk : config->disks) {
    std::error_code error;
    if (!std::filesystem::is_regular_file(disk.path, error)) {
      return {nullptr, refusal(fmt::format("this host does not see the disk {} (--storage shared "
                                           "needs the same paths on both hosts)",
                                           disk.path))};
    }
  }
  auto created = service.create(create, machine::HostChecks::kNone);
  if (!created) return {nullptr, refusal(created.error().message)};
  service.mark_incoming(name, true);
  const std::vector<RamRegion> regions = layout->ram_regions();
  uint64_t ram_length = 0;
  for (const RamRegion& region : regions) ram_length += region.size;
  UniqueFd state(::memfd_create(fmt::format("lamina-incoming-{}", name).c_str(), MFD_CLOEXEC));
  if (!state || ::ftruncate(state.get(), static_cast<off_t>(migration::kIncomingRamOffset + ram_length)) != 0) {
    const std::string why = std::strerror(errno);
    (void)service.remove(name, false);
    return {nullptr, refusal(fmt::format("cannot make room for the VM's memory here: {}", why))};
  }
  service.record_event(name, "migration", {{"phase", "incoming"}, {"ram_bytes", ram_length}});
  std::unique_ptr<IncomingMigration> migration(
      new IncomingMigration(service, name, regions, std::move(state)));
  return {std::move(migration), migration::make_json_message(MessageType::kAccept, nlohmann::json::object())};
}

Result<void> IncomingMigration::write_pages(std::span<const std::byte> message) {
  auto pages = migration::decode_pages(message);
  if (!pages) return fail(pages.error());
  size_t data_at = 0;
  for (size_t index = 0; index < pages->addresses.size(); ++index) {
    const uint64_t address = pages->addresses[index];
    // The page's place in the state file: regions back to back after kIncomingRamOffset.
    uint64_t file_offset = migration::kIncomingRamOffset;
    bool inside = false;
    for (const RamRegion& region : regions_) {
      if (address >= region.guest_physical && address - region.guest_physical < region.size) {
        file_offset += address - region.guest_physical;
        inside = true;
        break;
      }
      file_offset += region.size;
    }
    if (!inside) {
      return fail(ErrorCode::kCorrupt,
                  fmt::format("migration stream: page {:#x} is not in the VM's RAM", address));
    }
    if (pages->zero[index]) {
      if (::fallocate(state_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                      static_cast<off_t>(file_offset), kPageBytes) != 0) {
        return fail(ErrorCode::kIo, fmt::format("incoming RAM: {}", std::strerror(errno)));
      }
    } else {
      const std::span<const std::byte> data(pages->data.data() + data_at, kPageBytes);
      data_at += kPageBytes;
      if (auto written = migration::write_state_ram(state_.get(), file_offset, data); !written) {
        return fail(written.error().with_context("incoming RAM"));
      }
    }
    ++pages_;
  }
  return {};
}

std::vector<std::byte> IncomingMigration::switchover() {
  finished_ = true;
  auto failed = [&](const std::string& why) {
    return migration::make_json_message(MessageType::kFailed, {{"error", why}});
  };
  if (!have_stream_) return failed("the switchover came before the machine state");
  const auto switchover_at = std::chrono::steady_clock::now();
  if (auto written = migration::write_stream_and_header(state_.get(), stream_,
                                                        migration::kIncomingRamOffset, ram_length_);
      !written) {
    return failed(written.error().message());
  }
  auto started = service_.start(name_, state_.get());
  if (!started) return failed(started.error().message);
  started_ = true;
  service_.mark_incoming(name_, false);
  // How long the VM took to start here: the destination's share of the downtime.
  const auto start_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::steady_clock::now() - switchover_at)
                            .count();
  service_.record_event(name_, "migration",
                        {{"phase", "completed"},
                         {"direction", "incoming"},
                         {"pages", pages_},
                         {"start_ms", start_ms}});
  return migration::make_json_message(MessageType::kStarted, nlohmann::json::object());
}

Result<std::optional<std::vector<std::byte>>> IncomingMigration::receive(
    std::span<const std::byte> message) {
  if (finished_) return fail(ErrorCode::kInvalidArgument, "migration stream: a message after the end");
  auto type = migration::message_type(message);
  if (!type) return fail(type.error());
  switch (*type) {
    case MessageType::kPages:
      if (have_stream_) {
        return fail(ErrorCode::kCorrupt, "migration stream: pages after the machine state");
      }
      if (auto written = write_pages(message); !written) return fail(written.error());
      return std::optional<std::vector<std::byte>>();
    case MessageType::kState:
      if (have_stream_ || message.size() - 1 > migration::kMaxStateStream) {
        return fail(ErrorCode::kCorrupt, "migration stream: a second or oversized machine state");
      }
      stream_.assign(message.begin() + 1, message.end());
      have_stream_ = true;
      return std::optional<std::vector<std::byte>>();
    case MessageType::kSwitchover: return std::optional<std::vector<std::byte>>(switchover());
    default:
      return fail(ErrorCode::kCorrupt,
                  fmt::format("migration stream: unexpected message type {}",
                              static_cast<int>(*type)));
  }
}

}  // namespace lamina::mgmt
