// HistoryService: the store, its writer and its read path as one Persistence.
#include "roomd/history/history_service.hpp"

#include <utility>

#include "roomd/base/log.hpp"

namespace roomd {

HistoryService::HistoryService(uv_loop_t* loop, TaskRunner& tasks, std::string path, std::size_t heavy_slots,
                               std::uint32_t max_messages_per_room, std::string helper_program)
    : tasks_(tasks),
      store_(std::move(path)),
      writer_(tasks, store_, max_messages_per_room),
      helpers_(loop, std::move(helper_program), store_.path(), heavy_slots,
               [this](HistoryQuery q, HistoryHelpers::Done done) { query_on_pool(std::move(q), std::move(done)); }) {
  if (store_.opened_after_crash())
    log::warning("history " + store_.path() + " was not closed cleanly (a crash or kill -9): persisted rooms "
                 "begin a new epoch, so a client resuming across the crash is told resumed: false (clustered "
                 "rooms keep the cluster's: their seqs are Redis', never given again by this node)");
}

void HistoryService::append(StoredMessage message, std::function<void(bool)> committed) {
  writer_.append(std::move(message), std::move(committed));
}

void HistoryService::query(HistoryQuery q, std::function<void(HistoryPage)> done) {
  helpers_.query(std::move(q), std::move(done));
}

void HistoryService::query_on_pool(HistoryQuery q, std::function<void(HistoryPage)> done) {
  HistoryStore* store = &store_;
  tasks_.submit<HistoryPage>([store, q = std::move(q)] { return store->query(q); }, std::move(done), Lane::queries);
}

}  // namespace roomd
