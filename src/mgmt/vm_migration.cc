// VmService's live migration, source side: the API call, the TLS link to the destination
// laminad (a WebSocket on its --listen endpoint, mutual TLS), the offer, and the relay between
// the worker's frames and the link's messages. Protocol: migration/migration_protocol.h.

#include <sys/socket.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <vector>
#include <optional>
#include <chrono>
#include <thread>

#include <fmt/format.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include "machine/vm_definition.h"
#include "migration/migration_protocol.h"
#include "mgmt/checkpoint_disks.h"
#include "mgmt/host_port.h"
#include "mgmt/tls_setup.h"
#include "mgmt/vm_service.h"
#include "storage/image_format.h"

namespace lamina::mgmt {
namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace websocket = boost::beast::websocket;
using migration::MessageType;



// --storage copy: the offer's "disk_copies" (each disk's format and size, for the destination
// to create an empty image of) and the definition with the destination's paths: the same
// paths, or the same file names in `destination_dir`.
ServiceResult<nlohmann::json> plan_disk_copies(nlohmann::json& definition,
                                              const std::optional<std::string>& destination_dir) {
  nlohmann::json copies = nlohmann::json::array();
  if (!definition.contains("disks")) return copies;
  for (auto& text : definition["disks"]) {
    auto spec = virtio::parse_disk_spec(text.get<std::string>());
    if (!spec) return std::unexpected(ServiceError{500, "", spec.error().message()});
    storage::ImageAccess access;
    access.force_share = true;  // the running worker holds the lock
    access.references = spec->references;
    auto format = storage::detect_format(spec->path, access);
    if (!format) return std::unexpected(ServiceError{409, "storage", format.error().message()});
    const std::string_view name = (*format)->name;
    if (!migration::copyable_disk_format(name)) {
      return std::unexpected(ServiceError{
          409, "storage", fmt::format("--storage copy moves raw, VHD and VHDX disks; {} is {} "
                                      "(convert it with `lamina disk convert`)",
                                      spec->path, name)});
    }
    auto info = storage::inspect_image(**format, spec->path, access);
    if (!info) return std::unexpected(ServiceError{409, "storage", info.error().message()});
    if (destination_dir) {
      const std::string moved =
          (std::filesystem::path(*destination_dir) / std::filesystem::path(spec->path).filename()).string();
      text = replace_disk_path(text.get<std::string>(), moved);
    }
    copies.push_back({{"format", name}, {"size", info->virtual_size}});
  }
  return copies;
}

// The link to the destination laminad: TCP, TLS with this laminad's certificate, the
// destination's verified against the migration CA and its name, then the WebSocket.
class DestinationLink {
 public:
  DestinationLink() : tls_(ssl::context::tls_client), socket_(io_) {}

  // `token`: the destination's bearer token, for a destination whose --listen wants one
  // besides the certificate (empty: none is sent).
  Result<void> open(const MigrationTls& identity, const std::string& host, const std::string& port,
                    const std::string& token) {
    beast::error_code error;
    require_modern_tls(tls_);
    if (auto loaded = load_tls_identity(tls_, identity.certificate, "migration certificate", identity.key,
                                        "migration key");
        !loaded) {
      return loaded;
    }
    if (auto loaded = load_tls_ca(tls_, identity.ca, "migration CA"); !loaded) return loaded;
    // The stream copies the context's certificate when it is made: after loading it.
    stream_.emplace(socket_, tls_);
    ws_.emplace(*stream_);
    asio::ip::tcp::resolver resolver(io_);
    const auto endpoints = resolver.resolve(host, port, error);
    if (!error) {
      // A bounded send buffer (no autotuning to megabytes): what the worker has written is
      // then close to what crossed the link, which its bandwidth estimate relies on.
      socket_.open(endpoints.begin()->endpoint().protocol(), error);
      if (!error) socket_.set_option(asio::socket_base::send_buffer_size(512 * 1024), error);
      if (!error) socket_.connect(endpoints.begin()->endpoint(), error);
      // Small messages (a lane's kLaneEnd, the switchover) go at once: with Nagle's algorithm
      // they waited for the ACK of the pages before them, which the destination delays by up
      // to 40 ms, and that was downtime.
      if (!error) socket_.set_option(asio::ip::tcp::no_delay(true), error);
    }
    if (error) return fail(ErrorCode::kIo, fmt::format("cannot reach {}:{}: {}", host, port, error.message()));
    // A destination that stops answering ends the migration rather than hanging it: a
    // watchdog shuts the socket down under an operation that takes too long (asio's blocking
    // calls wait in poll(), which socket timeouts do not end).
    watchdog_ = std::jthread([this, fd = socket_.native_handle()](std::stop_token stop) {
      while (!stop.stop_requested()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        const int64_t deadline = deadline_ms_.load();
        if (deadline != 0 && now_ms() > deadline) {
          ::shutdown(fd, SHUT_RDWR);
          return;
        }
      }
    });
    stream_->set_verify_mode(ssl::verify_peer);
    stream_->set_verify_callback(ssl::host_name_verification(host));
    SSL_set_tlsext_host_name(stream_->native_handle(), host.c_str());
    stream_->handshake(ssl::stream_base::client, error);
    if (error) return fail(ErrorCode::kIo, fmt::format("TLS with {}:{}: {}", host, port, error.message()));
    ws_->read_message_max(migration::kMaxMessage);
    if (!token.empty()) {
      ws_->set_option(websocket::stream_base::decorator([token](websocket::request_type& request) {
        request.set(beast::http::field::authorization, "Bearer " + token);
      }));
    }
    ws_->handshake(host, "/v1/migrations/incoming", error);
    if (error == websocket::error::upgrade_declined) {
      // laminad answers a refused bearer token with 401 before any WebSocket.
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("{}:{} declined the migration: {}", host, port,
                              token.empty() ? "a laminad started with --token-file as well wants "
                                              "its token (lamina vm migrate "
                                              "--destination-token-file)"
                                            : "it did not accept the token given"));
    }
    if (error) {
      return fail(ErrorCode::kIo, fmt::format("{}:{} did not take the migration: {}", host, port,
                                              error.message()));
    }
    ws_->binary(true);
    return {};
  }

  Result<void> send(std::span<const std::byte> message) {
    beast::error_code error;
    const Deadline deadline(*this);
    ws_->write(asio::buffer(message.data(), message.size()), error);
    if (error) return fail(ErrorCode::kIo, fmt::format("the link to the destination: {}", error.message()));
    return {};
  }

  // Ends whatever send or receive is under way, from another thread (laminad stopping).
  void cut() {
    beast::error_code ignored;
    socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  }

  Result<std::vector<std::byte>> receive() {
    beast::flat_buffer buffer;
    beast::error_code error;
    const Deadline deadline(*this);
    ws_->read(buffer, error);
    if (error) return fail(ErrorCode::kIo, fmt::format("the link to the destination: {}", error.message()));
    const auto* data = static_cast<const std::byte*>(buffer.data().data());
    return std::vector<std::byte>(data, data + buffer.size());
  }

 private:
  asio::io_context io_;
  ssl::context tls_;
  asio::ip::tcp::socket socket_;
  std::optional<ssl::stream<asio::ip::tcp::socket&>> stream_;
  std::optional<websocket::stream<ssl::stream<asio::ip::tcp::socket&>&>> ws_;

  // One message each way may take this long (a megabyte on a slow link), no longer.
  static constexpr int64_t kOperationLimitMs = 30000;
  static int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  struct Deadline {
    explicit Deadline(DestinationLink& link) : link_(link) {
      link_.deadline_ms_.store(now_ms() + kOperationLimitMs);
    }
    ~Deadline() { link_.deadline_ms_.store(0); }
    DestinationLink& link_;
  };
  std::atomic<int64_t> deadline_ms_{0};
  std::jthread watchdog_;  // last: stopped and joined before the socket goes
};

// Connections to the destination when the request names none: the main one and three lanes
// that carry pages, each compressed on a thread of its own.
constexpr int64_t kDefaultConnections = 4;

// The source laminad's side of a lane: frames from the worker's end of a socket pair go out
// as messages on the lane's own link, until the worker closes its end.
void relay_lane(int relay, DestinationLink& link) {
  for (;;) {
    auto frame = migration::read_frame(relay);
    if (!frame) return;
    if (!link.send(*frame)) return;
  }
}

}  // namespace

ServiceResult<nlohmann::json> VmService::migrate(const std::string& name, const nlohmann::json& body) {
  if (!body.is_object()) return std::unexpected(ServiceError::bad_request("", "the body must be a JSON object"));
  for (const auto& [key, value] : body.items()) {
    if (key != "to" && key != "storage" && key != "max_downtime_ms" && key != "destination_dir" &&
        key != "destination_token" && key != "connections" && key != "accel") {
      return std::unexpected(ServiceError::bad_request(key, fmt::format("unknown field '{}'", key)));
    }
  }
  if (!body.contains("to") || !body["to"].is_string()) {
    return std::unexpected(ServiceError::bad_request("to", "'to' names the destination laminad as HOST:PORT"));
  }
  const auto destination = parse_host_port(body["to"].get<std::string>());
  if (!destination || destination->second == 0) {
    return std::unexpected(ServiceError::bad_request("to", "'to' must be HOST:PORT (the destination laminad's --listen)"));
  }
  const auto& storage_field = body.contains("storage") ? body["storage"] : nlohmann::json("shared");
  if (!storage_field.is_string() || (storage_field != "shared" && storage_field != "copy")) {
    return std::unexpected(ServiceError::bad_request("storage", "'storage' is shared or copy"));
  }
  const std::string storage = storage_field.get<std::string>();
  std::string token;
  if (body.contains("destination_token")) {
    const auto& given = body["destination_token"];
    if (!given.is_string() || given.get<std::string>().size() < 16 ||
        given.get<std::string>().find_first_of("\r\n") != std::string::npos) {
      return std::unexpected(ServiceError::bad_request(
          "destination_token", "destination_token is the destination's bearer token (16 or more characters, one line)"));
    }
    token = given.get<std::string>();
  }
  std::optional<std::string> destination_dir;
  if (body.contains("destination_dir")) {
    const auto& dir = body["destination_dir"];
    if (storage != "copy") {
      return std::unexpected(ServiceError::bad_request("destination_dir", "destination_dir goes with storage copy"));
    }
    if (!dir.is_string() || dir.get<std::string>().empty() || dir.get<std::string>()[0] != '/') {
      return std::unexpected(ServiceError::bad_request("destination_dir", "destination_dir is an absolute folder on the destination"));
    }
    destination_dir = dir.get<std::string>();
  }
  const auto& downtime = body.contains("max_downtime_ms") ? body["max_downtime_ms"] : nlohmann::json(50);
  if (!downtime.is_number_integer() || downtime.get<int64_t>() < 1 || downtime.get<int64_t>() > 600000) {
    return std::unexpected(ServiceError::bad_request("max_downtime_ms", "max_downtime_ms is a whole number of 1 to 600000"));
  }
  const auto& connections = body.contains("connections") ? body["connections"] : nlohmann::json(kDefaultConnections);
  if (!connections.is_number_integer() || connections.get<int64_t>() < 1 ||
      connections.get<int64_t>() > migration::kMaxConnections) {
    return std::unexpected(ServiceError::bad_request(
        "connections", fmt::format("connections is a whole number of 1 to {}", migration::kMaxConnections)));
  }
  // Another accelerator at the destination: the machine state is the same on both.
  std::optional<std::string> accel;
  if (body.contains("accel")) {
    if (!body["accel"].is_string() || !machine::parse_accel(body["accel"].get<std::string>())) {
      return std::unexpected(ServiceError::bad_request("accel", "accel is emu, kvm or auto"));
    }
    accel = body["accel"].get<std::string>();
  }
  if (!options_.migration_tls) {
    return std::unexpected(ServiceError{
        409, "", "this laminad cannot send VMs away: start it with --listen, --tls-cert, "
                 "--tls-key and --tls-ca (its certificate identifies it to the destination)"});
  }
  auto found = inventory_->find(name);
  if (!found) return std::unexpected(ServiceError{500, "", found.error().message()});
  if (!*found) return std::unexpected(ServiceError::no_vm(name));
  nlohmann::json offer{{"name", name},
                       {"definition", (*found)->definition},
                       {"autostart", (*found)->autostart},
                       {"on_crash", (*found)->on_crash}};
  if (accel) offer["definition"]["accel"] = *accel;
  auto config = machine::vm_config_from_definition((*found)->definition, machine::HostChecks::kNone);
  if (!config) return std::unexpected(ServiceError{500, "", config.error().message()});
  offer["vcpus"] = config->cpus;
  offer["memory_bytes"] = config->memory_bytes;
  offer["storage"] = storage;
  offer["connections"] = connections.get<int64_t>();
  if (storage == "copy") {
    auto copies = plan_disk_copies(offer["definition"], destination_dir);
    if (!copies) return std::unexpected(copies.error());
    offer["disk_copies"] = std::move(*copies);
  }
  {
    std::lock_guard lock(mutex_);
    auto running = running_.find(name);
    if (running == running_.end()) {
      return std::unexpected(ServiceError::conflict(fmt::format("{} is not running: only a running VM migrates", name)));
    }
    if (running->second.migrating) {
      return std::unexpected(ServiceError::conflict(fmt::format("{} is already migrating", name)));
    }
    running->second.migrating = true;
  }
  log_event(name, "migration", {{"phase", "connecting"}, {"to", body["to"]}});
  {
    std::lock_guard lock(migration_threads_mutex_);
    // The VM's previous migration (if any) has finished: its flag was clear.
    migration_threads_[name] = std::jthread(
        [this, name, host = destination->first, port = std::to_string(destination->second),
         offer = std::move(offer), downtime = downtime.get<int64_t>(), storage,
         token](std::stop_token stop) mutable {
          run_migration(std::move(stop), name, host, port, std::move(offer), downtime, storage,
                        token);
        });
  }
  return nlohmann::json{{"name", name}, {"migration", "started"}, {"to", body["to"]}};
}

void VmService::run_migration(std::stop_token stop, std::string name, std::string host,
                              std::string port, nlohmann::json offer, int64_t max_downtime_ms,
                              std::string storage, std::string token) {
  auto failed = [&](const std::string& why) {
    log_event(name, "migration", {{"phase", "failed"}, {"error", why}});
    std::lock_guard lock(mutex_);
    if (auto running = running_.find(name); running != running_.end()) running->second.migrating = false;
  };
  DestinationLink link;
  std::stop_callback cut_link(stop, [&link] { link.cut(); });
  if (auto opened = link.open(*options_.migration_tls, host, port, token); !opened) {
    return failed(opened.error().message());
  }
  if (auto sent = link.send(migration::make_json_message(MessageType::kOffer, offer)); !sent) {
    return failed(sent.error().message());
  }
  auto answer = link.receive();
  if (!answer) return failed(answer.error().message());
  auto type = migration::message_type(*answer);
  auto accepted = migration::message_json(*answer);
  if (!type || *type != MessageType::kAccept) {
    return failed(fmt::format("the destination refused: {}",
                              accepted ? accepted->value("error", std::string("no reason given"))
                                       : std::string("an answer that is not JSON")));
  }
  // The lanes the destination granted (one connection from a laminad that knows no lanes),
  // each joined to this migration by the id it gave.
  uint64_t granted = 1;
  std::string join;
  if (accepted && accepted->is_object() && accepted->contains("connections")) {
    const auto& given = (*accepted)["connections"];
    if (!given.is_number_unsigned() || given.get<uint64_t>() < 1 ||
        given.get<uint64_t>() > offer.value("connections", uint64_t{1}) ||
        !(*accepted)["join"].is_string()) {
      return failed("the destination's acceptance is malformed (connections, join)");
    }
    granted = given.get<uint64_t>();
    join = (*accepted)["join"].get<std::string>();
  }
  std::vector<std::unique_ptr<DestinationLink>> lane_links;
  for (uint64_t lane = 1; lane < granted; ++lane) {
    auto lane_link = std::make_unique<DestinationLink>();
    if (auto opened = lane_link->open(*options_.migration_tls, host, port, token); !opened) {
      return failed(opened.error().with_context(fmt::format("connection {}", lane + 1)).message());
    }
    if (auto sent = lane_link->send(migration::make_json_message(MessageType::kJoin,
                                                                 {{"join", join}, {"lane", lane}}));
        !sent) {
      return failed(sent.error().message());
    }
    auto joined = lane_link->receive();
    if (!joined) return failed(joined.error().message());
    auto joined_type = migration::message_type(*joined);
    if (!joined_type || *joined_type != MessageType::kAccept) {
      auto body = migration::message_json(*joined);
      return failed(fmt::format("the destination refused connection {}: {}", lane + 1,
                                body ? body->value("error", std::string("no reason given"))
                                     : std::string("an answer that is not JSON")));
    }
    lane_links.push_back(std::move(lane_link));
  }
  std::stop_callback cut_lanes(stop, [&lane_links] {
    for (auto& lane_link : lane_links) lane_link->cut();
  });
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    return failed(fmt::format("socketpair: {}", std::strerror(errno)));
  }
  UniqueFd relay(pair[0]);
  UniqueFd worker_end(pair[1]);
  std::stop_callback cut_relay(stop, [fd = relay.get()] { ::shutdown(fd, SHUT_RDWR); });
  std::vector<UniqueFd> lane_relays;
  std::vector<UniqueFd> lane_worker_ends;
  for (size_t lane = 0; lane < lane_links.size(); ++lane) {
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
      return failed(fmt::format("socketpair: {}", std::strerror(errno)));
    }
    lane_relays.emplace_back(pair[0]);
    lane_worker_ends.emplace_back(pair[1]);
  }
  WorkerProcess* worker = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (auto running = running_.find(name); running != running_.end()) worker = running->second.worker.get();
  }
  if (worker == nullptr) return failed("the VM stopped before its migration began");
  std::vector<int> fds = {worker_end.get()};
  for (const UniqueFd& end : lane_worker_ends) fds.push_back(end.get());
  if (auto started = worker->request({{"op", "migrate"}, {"max_downtime_ms", max_downtime_ms}, {"storage", storage}},
                                     std::chrono::seconds(5), fds, nullptr);
      !started) {
    return failed(started.error().message());
  }
  worker_end.reset();
  lane_worker_ends.clear();
  // Each lane relays on a thread of its own; a lane whose link breaks closes its relay,
  // which the worker takes as a failed migration.
  std::vector<std::jthread> lane_threads;
  for (size_t lane = 0; lane < lane_links.size(); ++lane) {
    lane_threads.emplace_back([relay_fd = lane_relays[lane].get(), &lane_link = *lane_links[lane]] {
      relay_lane(relay_fd, lane_link);
      ::shutdown(relay_fd, SHUT_RDWR);
    });
  }
  // The relay: the worker's frames go out as messages; the destination's one answer, after
  // the switchover, comes back as a frame. A broken link closes the relay, which the worker
  // takes as a failed migration (its VM runs on). The worker reports the outcome itself.
  for (;;) {
    auto frame = migration::read_frame(relay.get());
    if (!frame) break;  // the worker is done (or gone)
    if (!link.send(*frame)) break;
    auto frame_type = migration::message_type(*frame);
    if (frame_type && *frame_type == MessageType::kSwitchover) {
      auto reply = link.receive();
      if (!reply || !migration::write_frame(relay.get(), *reply)) break;
    }
  }
  // A worker still writing (the link broke) fails at once; it then closes its lanes' ends,
  // which ends their relays (joined before this returns).
  ::shutdown(relay.get(), SHUT_RDWR);
  lane_threads.clear();
  std::lock_guard lock(mutex_);
  if (auto running = running_.find(name); running != running_.end()) running->second.migrating = false;
}

}  // namespace lamina::mgmt
