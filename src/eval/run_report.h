#pragma once
// A training run as one markdown page (chainlm report): the model and its sub-models with
// their parameters, the training settings, final and best training and validation loss per
// sub-model, throughput, and the loss plot embedded as an image.
#include <string>

#include "eval/run_metrics.h"

namespace chainlm {

// Window of logged steps that "final" and "best" training losses average over (one step's
// loss is noise).
inline constexpr int kReportTrainWindow = 20;

// run_dir: a run directory (metrics.jsonl, `latest`). The model and training sections come
// from the latest checkpoint's config.json and trainer_state.json; a run without a
// checkpoint yet gets a note instead. plot_link: the image path to embed, relative to the
// report (empty = no image).
std::string run_report_markdown(const std::string& run_dir, const RunMetrics& metrics,
                                const std::string& plot_link);
// Whether path is a report run_report_markdown wrote, unedited since (its title, and the
// checksum in its last line), which report may replace without --overwrite.
bool is_run_report_file(const std::string& path);
// The last line of a report whose text before it is `body`: an HTML comment (invisible when the
// markdown is rendered) holding body's CRC-32.
std::string report_marker(const std::string& body);

}  // namespace chainlm
