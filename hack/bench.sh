#!/usr/bin/env bash
# `make bench`: the benchmark matrix, one release-built operator process per case against
# a fresh control plane and the simulator, then one table.
#
# Cases (flavor:webhooks:resync seconds), overridable: BBWO_BENCH_CASES="Cloud:1000:30 ...".
# BBWO_BENCH_WEBHOOKS set instead runs that one case as sized by the BBWO_BENCH_* variables.
# BBWO_BENCH_BUDGET=0 skips the budget cases (400 Webhooks; a WebhookSet of 500 repositories;
# 500 Webhooks changed at once at 1,000/h, about 30 minutes, and 2,000 Webhooks' steady state
# at 1,000/h, about 25 minutes: BBWO_BENCH_REFACTOR=0 skips these two; an inventory of a
# Data Center instance).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${BBWO_CONTROLPLANE_DIR:?set by make bench}"
cases=${BBWO_BENCH_CASES:-"Cloud:1000:30 DataCenter:1000:30 Cloud:10000:120 DataCenter:10000:120"}
logs=target/bench
mkdir -p "$logs"

run() { # name, then env assignments
    local name=$1
    shift
    echo "bench: $name (log: $logs/$name.log)" >&2
    env "$@" cargo test --release --test bench -- --ignored --nocapture --test-threads=1 \
        "${test_filter[@]}" 2>&1 | tee "$logs/$name.log" | grep --line-buffered '^bench:' >&2 || true
    if ! grep -q '^test result: ok' "$logs/$name.log"; then
        echo "bench: $name failed; see $logs/$name.log" >&2
        tail -n 20 "$logs/$name.log" >&2
        exit 1
    fi
}

cargo test --release --test bench --no-run 2>&1 | tail -n 1 >&2

if [[ -n "${BBWO_BENCH_WEBHOOKS:-}" ]]; then
    test_filter=(--exact many_webhooks_converge_and_stay_cheap)
    run single
    grep '^|' "$logs/single.log"
    exit 0
fi

summaries=()
for case in $cases; do
    IFS=: read -r flavor webhooks resync <<<"$case"
    test_filter=(--exact many_webhooks_converge_and_stay_cheap)
    run "$flavor-$webhooks" BBWO_BENCH_FLAVOR="$flavor" BBWO_BENCH_WEBHOOKS="$webhooks" \
        BBWO_BENCH_RESYNC_SECONDS="$resync"
    echo "## $flavor, $webhooks Webhooks (resync ${resync} s)"
    echo
    grep '^|' "$logs/$flavor-$webhooks.log"
    echo
    summaries+=("$(grep '^summary: ' "$logs/$flavor-$webhooks.log" | sed 's/^summary: //')")
done

budget=""
set_budget=""
refactor=""
steady=""
inventory=""
if [[ "${BBWO_BENCH_BUDGET:-1}" != 0 ]]; then
    test_filter=(--exact a_budget_is_used_at_its_limit)
    run budget
    budget=$(grep '^summary-budget: ' "$logs/budget.log" | sed 's/^summary-budget: //')
    test_filter=(--exact a_webhookset_of_500_repositories_uses_the_budget_at_its_limit)
    run set-budget
    set_budget=$(grep '^summary-set: ' "$logs/set-budget.log" | sed 's/^summary-set: //')
    if [[ "${BBWO_BENCH_REFACTOR:-1}" != 0 ]]; then
        test_filter=(--exact five_hundred_webhooks_changed_at_once_at_cloud_s_limit)
        run refactor
        refactor=$(grep '^summary-refactor: ' "$logs/refactor.log" | sed 's/^summary-refactor: //')
        test_filter=(--exact a_steady_state_of_2000_webhooks_leaves_half_of_the_budget_free)
        run steady
        steady=$(grep '^summary-steady: ' "$logs/steady.log" | sed 's/^summary-steady: //')
    fi
    test_filter=(--exact an_inventory_uses_one_request_per_place_within_its_budget)
    run inventory
    inventory=$(grep '^summary-inventory: ' "$logs/inventory.log" | sed 's/^summary-inventory: //')
    echo "## inventory"
    echo
    grep '^| ' "$logs/inventory.log"
    echo
fi

echo "## Summary ($(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD), $(nproc) cores)"
echo
echo "| flavor | Webhooks | all Ready after the last create | writes per hook | listings per repository per slot | edit p99 | hook requests after a restart | peak RSS |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${summaries[@]}"
if [[ -n "$budget" ]]; then
    echo
    echo "| budget case | Bitbucket requests | all Ready after | the budget's minimum | achieved / minimum |"
    echo "|---|---|---|---|---|"
    echo "$budget"
    echo "$set_budget"
    [[ -z "$refactor" ]] || echo "$refactor"
    echo "$inventory"
fi
if [[ -n "$steady" ]]; then
    echo
    echo "| steady state | Bitbucket requests | periodic work | changes |"
    echo "|---|---|---|---|"
    echo "$steady"
fi
