#include "mgmt/api_router.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include <gtest/gtest.h>

namespace lamina::mgmt {
namespace {

namespace fs = std::filesystem;

class ApiRouterTest : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lamina-api-test-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    auto service = VmService::open({.state_dir = dir_ / "state",
                                    .worker_program = "/nonexistent/lamina-vm",
                                    .lamina_program = "/nonexistent/lamina"});
    ASSERT_TRUE(service) << service.error().message();
    service_ = std::move(*service);
    router_ = std::make_unique<ApiRouter>(*service_);
  }
  void TearDown() override {
    router_.reset();
    service_.reset();
    fs::remove_all(dir_);
  }
  ApiResponse call(const std::string& method, const std::string& target,
                   const std::string& body = "") {
    return router_->handle({method, target, body});
  }
  static nlohmann::json json(const ApiResponse& response) {
    return nlohmann::json::parse(response.body);
  }
  static std::string field(const ApiResponse& response) {
    return json(response)["error"]["field"].get<std::string>();
  }

  fs::path dir_;
  std::unique_ptr<VmService> service_;
  std::unique_ptr<ApiRouter> router_;
};

TEST_F(ApiRouterTest, EveryRouteIsInTheOpenApiDocumentAndBack) {
  const auto document = nlohmann::json::parse(ApiRouter::openapi_document());
  ASSERT_EQ(document["openapi"], "3.0.3");
  std::set<std::pair<std::string, std::string>> documented;
  for (const auto& [path, operations] : document["paths"].items()) {
    for (const auto& [method, operation] : operations.items()) {
      std::string upper = method;
      for (char& c : upper) c = static_cast<char>(std::toupper(c));
      documented.insert({upper, path});
    }
  }
  std::set<std::pair<std::string, std::string>> served;
  for (const RouteInfo& route : ApiRouter::routes()) {
    served.insert({std::string(route.method), std::string(route.path)});
  }
  EXPECT_EQ(documented, served);
  // And each served route really answers something other than "no such resource".
  for (const auto& [method, path] : served) {
    std::string concrete = path;
    if (auto at = concrete.find("{name}"); at != std::string::npos) concrete.replace(at, 6, "nosuchvm");
    const ApiResponse response = call(method, concrete, method == "PATCH" ? "{}" : "");
    if (response.status == 404) {
      const std::string message = json(response)["error"]["message"].get<std::string>();
      EXPECT_TRUE(message.find("no VM") != std::string::npos ||
                  message.find("no switch") != std::string::npos)
          << method << " " << path << ": " << message;
    }
    EXPECT_NE(response.status, 405) << method << " " << path;
  }
}

TEST_F(ApiRouterTest, CreateListGetUpdateDelete) {
  auto created = call("POST", "/v1/vms",
                      R"({"name":"web1","definition":{"cpus":2,"memory":"256M"}})");
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(json(created)["state"], "stopped");
  EXPECT_EQ(json(created)["uuid"].get<std::string>().size(), 36u);
  auto listed = call("GET", "/v1/vms");
  ASSERT_EQ(listed.status, 200);
  ASSERT_EQ(json(listed)["vms"].size(), 1u);
  EXPECT_EQ(json(listed)["vms"][0]["name"], "web1");
  auto got = call("GET", "/v1/vms/web1");
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(json(got)["definition"]["cpus"], 2);
  auto updated = call("PATCH", "/v1/vms/web1", R"({"definition":{"cpus":4},"autostart":true})");
  ASSERT_EQ(updated.status, 200) << updated.body;
  EXPECT_EQ(json(updated)["definition"]["cpus"], 4);
  EXPECT_EQ(json(updated)["autostart"], true);
  auto deleted = call("DELETE", "/v1/vms/web1");
  ASSERT_EQ(deleted.status, 200);
  EXPECT_EQ(call("GET", "/v1/vms/web1").status, 404);
  // The log says what happened, in order.
  auto events = json(call("GET", "/v1/events?vm=web1"))["events"];
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0]["kind"], "created");
  EXPECT_EQ(events[1]["kind"], "updated");
  EXPECT_EQ(events[2]["kind"], "deleted");
}

TEST_F(ApiRouterTest, BadInputNamesTheFieldAndChangesNothing) {
  EXPECT_EQ(field(call("POST", "/v1/vms", R"({"name":"has space"})")), "name");
  EXPECT_EQ(field(call("POST", "/v1/vms", R"({"name":"-dash"})")), "name");
  EXPECT_EQ(field(call("POST", "/v1/vms", "{\"name\":\"" + std::string(64, 'a') + "\"}")), "name");
  EXPECT_EQ(field(call("POST", "/v1/vms", R"({"name":"a","colour":"red"})")), "colour");
  EXPECT_EQ(field(call("POST", "/v1/vms", R"({"name":"a","definition":{"memory":"lots"}})")),
            "definition.memory");
  EXPECT_EQ(field(call("POST", "/v1/vms", R"({"name":"a","definition":{"cpus":0}})")),
            "definition.cpus");
  EXPECT_EQ(field(call("POST", "/v1/vms", R"({"name":"a","definition":{"shoe":1}})")),
            "definition.shoe");
  EXPECT_EQ(field(call("POST", "/v1/vms",
                       R"({"name":"a","definition":{"kernel":"/nonexistent/bzImage"}})")),
            "definition.kernel");
  EXPECT_EQ(field(call("POST", "/v1/vms", R"({"name":"a","definition":{"serial":"stdio"}})")),
            "definition.serial");
  EXPECT_EQ(field(call("POST", "/v1/vms", R"({"name":"a","on_crash":"explode"})")), "on_crash");
  EXPECT_EQ(call("POST", "/v1/vms", "{not json").status, 400);
  EXPECT_EQ(call("POST", "/v1/vms", "").status, 400);
  EXPECT_EQ(call("POST", "/v1/vms", "[1]").status, 400);
  EXPECT_EQ(call("POST", "/v1/vms", std::string(ApiRouter::kMaxBodyBytes + 1, ' ')).status, 413);
  EXPECT_EQ(json(call("GET", "/v1/vms"))["vms"].size(), 0u);
  EXPECT_EQ(json(call("GET", "/v1/events"))["events"].size(), 0u);
}

TEST_F(ApiRouterTest, ConflictsAndMissingVms) {
  ASSERT_EQ(call("POST", "/v1/vms", R"({"name":"db"})").status, 201);
  EXPECT_EQ(call("POST", "/v1/vms", R"({"name":"db"})").status, 409);
  EXPECT_EQ(call("POST", "/v1/vms/db/stop").status, 409);
  EXPECT_EQ(call("POST", "/v1/vms/db/pause").status, 409);
  EXPECT_EQ(call("POST", "/v1/vms/db/kill").status, 409);
  EXPECT_EQ(call("GET", "/v1/vms/nosuch").status, 404);
  EXPECT_EQ(call("DELETE", "/v1/vms/nosuch").status, 404);
  EXPECT_EQ(call("POST", "/v1/vms/nosuch/start").status, 404);
  EXPECT_EQ(call("PUT", "/v1/vms/db").status, 405);
  EXPECT_EQ(call("GET", "/v1/nothing").status, 404);
  EXPECT_EQ(field(call("DELETE", "/v1/vms/db?with_disks=perhaps")), "with_disks");
  EXPECT_EQ(field(call("GET", "/v1/events?after=-1")), "after");
  EXPECT_EQ(field(call("POST", "/v1/vms/db/stop", R"({"timeout":"soon"})")), "timeout");
}

TEST_F(ApiRouterTest, StartWithoutAWorkerFailsCleanly) {
  ASSERT_EQ(call("POST", "/v1/vms", R"({"name":"vm1"})").status, 201);
  auto started = call("POST", "/v1/vms/vm1/start");
  EXPECT_EQ(started.status, 422) << started.body;
  EXPECT_EQ(json(call("GET", "/v1/vms/vm1"))["state"], "stopped");
  // A second try is not refused as "already starting".
  EXPECT_EQ(call("POST", "/v1/vms/vm1/start").status, 422);
}

TEST_F(ApiRouterTest, DeleteWithDisksRemovesOnlyTheNamedImages) {
  const fs::path image = dir_ / "data.raw";
  const fs::path other = dir_ / "other.raw";
  std::ofstream(image) << std::string(512, '\0');
  std::ofstream(other) << std::string(512, '\0');
  const std::string body =
      nlohmann::json{{"name", "withdisk"}, {"definition", {{"disks", {image.string() + ",readonly"}}}}}
          .dump();
  ASSERT_EQ(call("POST", "/v1/vms", body).status, 201);
  EXPECT_EQ(call("DELETE", "/v1/vms/withdisk?with_disks=true").status, 200);
  EXPECT_FALSE(fs::exists(image));
  EXPECT_TRUE(fs::exists(other));
}

TEST_F(ApiRouterTest, DisksAreCreatedAndInspectedWithTheDiskCode) {
  const std::string path = (dir_ / "new.vhdx").string();
  auto created = call("POST", "/v1/disks",
                      nlohmann::json{{"path", path}, {"size", "64M"}, {"format", "vhdx"}}.dump());
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(json(created)["format"], "vhdx");
  EXPECT_EQ(json(created)["virtual_size"], 64 << 20);
  // Never replaces a file.
  EXPECT_EQ(call("POST", "/v1/disks", nlohmann::json{{"path", path}, {"size", "1M"}}.dump()).status,
            409);
  const std::string child = (dir_ / "child.vhdx").string();
  auto differencing =
      call("POST", "/v1/disks", nlohmann::json{{"path", child}, {"parent", path}}.dump());
  ASSERT_EQ(differencing.status, 201) << differencing.body;
  EXPECT_EQ(json(differencing)["backing_chain"].size(), 1u);
  auto info = call("GET", "/v1/disks/info?path=" + path);
  ASSERT_EQ(info.status, 200) << info.body;
  EXPECT_EQ(json(info)["virtual_size"], 64 << 20);
  EXPECT_EQ(field(call("GET", "/v1/disks/info?path=relative.vhdx")), "path");
  EXPECT_EQ(call("GET", "/v1/disks/info?path=" + (dir_ / "missing.vhd").string()).status, 404);
  EXPECT_EQ(field(call("POST", "/v1/disks", R"({"path":"/tmp/x.vhdx","size":"lots"})")), "size");
  EXPECT_EQ(field(call("POST", "/v1/disks", R"({"path":"/tmp/x.vhdx","size":"1M","format":"qcow9"})")),
            "format");
  EXPECT_EQ(field(call("POST", "/v1/disks", R"({"path":"x.vhdx","size":"1M"})")), "path");
  EXPECT_EQ(field(call("POST", "/v1/disks", R"({"path":"/tmp/x.vhdx","colour":1})")), "colour");
  EXPECT_FALSE(fs::exists("/tmp/x.vhdx"));
}

TEST_F(ApiRouterTest, SwitchesThatDoNotRunAreNotFound) {
  EXPECT_EQ(call("GET", "/v1/switches/lamina-test-nonexistent").status, 404);
  EXPECT_EQ(call("GET", "/v1/switches").status, 200);
}

// A stopped VM's devices and resources: the definition follows; refusals change nothing.
TEST_F(ApiRouterTest, AttachDetachAndResizeAStoppedVm) {
  const fs::path image = dir_ / "data.raw";
  std::ofstream(image) << std::string(512, '\0');
  ASSERT_EQ(call("POST", "/v1/vms", R"({"name":"hp","definition":{"cpus":1,"max_cpus":4,"memory":"256M,max=1G"}})").status,
            201);
  auto attached = call("POST", "/v1/vms/hp/devices", nlohmann::json{{"disk", image.string()}}.dump());
  ASSERT_EQ(attached.status, 200) << attached.body;
  EXPECT_EQ(json(attached)["attached"], "disk0");
  EXPECT_EQ(json(attached)["devices"][0]["spec"], image.string());
  auto twice = call("POST", "/v1/vms/hp/devices", nlohmann::json{{"disk", image.string()}}.dump());
  EXPECT_EQ(twice.status, 400) << "the same image twice, writable";
  EXPECT_EQ(call("POST", "/v1/vms/hp/devices", R"({"disk":"/nonexistent/x.vhd"})").status, 400);
  EXPECT_EQ(call("POST", "/v1/vms/hp/devices", R"({"floppy":"x"})").status, 400);
  EXPECT_EQ(call("POST", "/v1/vms/hp/devices", R"({"net":"switch:lan"})").status, 200);
  auto got = json(call("GET", "/v1/vms/hp"));
  ASSERT_EQ(got["devices"].size(), 2u);
  EXPECT_EQ(got["devices"][1]["id"], "net0");
  EXPECT_NE(got["definition"]["nets"][0].get<std::string>().find("mac="), std::string::npos)
      << "a card gets its MAC in the definition";
  EXPECT_EQ(call("DELETE", "/v1/vms/hp/devices/disk7").status, 404);
  EXPECT_EQ(call("DELETE", "/v1/vms/hp/devices/disk0").status, 200);
  EXPECT_EQ(call("DELETE", "/v1/vms/hp/devices/net0").status, 200);
  EXPECT_FALSE(json(call("GET", "/v1/vms/hp"))["definition"].contains("disks"));

  EXPECT_EQ(call("POST", "/v1/vms/hp/resize", R"({"cpus":3})").status, 200);
  EXPECT_EQ(json(call("GET", "/v1/vms/hp"))["definition"]["cpus"], 3);
  EXPECT_EQ(call("POST", "/v1/vms/hp/resize", R"({"cpus":5})").status, 400) << "past max_cpus";
  EXPECT_EQ(call("POST", "/v1/vms/hp/resize", R"({"memory":"2G"})").status, 400) << "past max";
  EXPECT_EQ(call("POST", "/v1/vms/hp/resize", R"({"memory":"512M"})").status, 200);
  EXPECT_EQ(json(call("GET", "/v1/vms/hp"))["definition"]["memory_target"], "512M");
  EXPECT_EQ(call("POST", "/v1/vms/hp/resize", R"({"memory":"lots"})").status, 400);
  EXPECT_EQ(call("POST", "/v1/vms/hp/resize", R"({"disks":1})").status, 400);
  EXPECT_EQ(call("POST", "/v1/vms/nothere/resize", R"({"cpus":1})").status, 404);
}

TEST(QueryParsing, DecodesPercentEscapes) {
  auto values = parse_query("vm=a%2Fb&flag&x=1+2");
  EXPECT_EQ(values["vm"], "a/b");
  EXPECT_EQ(values["flag"], "");
  EXPECT_EQ(values["x"], "1 2");
}

TEST(VmNames, FollowTheRule) {
  EXPECT_TRUE(valid_vm_name("a"));
  EXPECT_TRUE(valid_vm_name("web-1.prod_2"));
  EXPECT_FALSE(valid_vm_name(""));
  EXPECT_FALSE(valid_vm_name(".hidden"));
  EXPECT_FALSE(valid_vm_name("a/b"));
  EXPECT_FALSE(valid_vm_name(std::string(64, 'a')));
  EXPECT_TRUE(valid_vm_name(std::string(63, 'a')));
}

}  // namespace
}  // namespace lamina::mgmt
