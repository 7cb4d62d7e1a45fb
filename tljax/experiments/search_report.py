"""The search's report: search.md (every trial, what it spent, the best per method) and
search.png (validation accuracy at each rung against the FLOPs spent)."""
from etils import epath

from tljax import paths
from tljax.experiments import tables
from tljax.experiments.search import (CHARGED_TO, accuracy_of, backbone_of,  # noqa: F401
                                      best_per_method, is_pareto, method_of, pareto_front,
                                      spent)  # (best_per_method: read here too)


def _rung_values(trial):
    """{step: validation accuracy} of the rungs a trial reported; a trial of a "pareto"
    study reports none (Optuna takes no intermediate values there) and has its end's."""
    import optuna

    if trial.intermediate_values:
        return trial.intermediate_values
    if trial.state == optuna.trial.TrialState.COMPLETE and CHARGED_TO in trial.user_attrs:
        return {trial.user_attrs[CHARGED_TO]: accuracy_of(trial)}
    return {}


def _backbone_lines(study):
    """Per backbone (when the search chose one): its screening probe's validation accuracy,
    its best trial and what the search spent on it."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    backbones = list(dict.fromkeys(backbone_of(t) for t in trials))
    if backbones == [""] or not backbones:
        return []
    lines = ["", "| backbone | screening probe: validation % | best trial | its method | "
             "validation % | trials | FLOPs spent |", "|---|---:|---:|---|---:|---:|---:|"]
    for backbone in backbones:
        mine = [t for t in trials if backbone_of(t) == backbone]
        done = [t for t in mine if t.state == optuna.trial.TrialState.COMPLETE]
        screening = next((t for t in done if not t.params and method_of(t).startswith(
            "probe:")), None)
        best = max(done, key=accuracy_of, default=None)
        lines.append(f"| {backbone} | "
                     f"{'' if screening is None else f'{100 * accuracy_of(screening):.1f}'} | "
                     f"{'' if best is None else best.number} | "
                     f"{'' if best is None else method_of(best)} | "
                     f"{'' if best is None else f'{100 * accuracy_of(best):.1f}'} | {len(mine)} | "
                     f"{sum(t.user_attrs.get('flops', 0.0) for t in mine):.3g} |")
    return lines


def _finished_and_front(study, total_flops_per_trial):
    """(the finished trials, those no other beats in both validation accuracy and full-length
    train FLOPs: the configurations worth their cost, cheapest first)."""
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    points = [(accuracy_of(t), total_flops_per_trial(t)) for t in done]
    return done, sorted((done[i] for i in pareto_front(points)), key=total_flops_per_trial)


def _pareto_lines(study, total_flops_per_trial):
    """The Pareto front as a table, cheapest first."""
    _, front = _finished_and_front(study, total_flops_per_trial)
    if not front:
        return []
    lines = ["", "Accuracy against cost (the Pareto front: no finished trial is as accurate "
             "for fewer train FLOPs):", "", "| trial | method | validation % | train FLOPs "
             "at full length | hyper-parameters |", "|---:|---|---:|---:|---|"]
    for t in front:
        hyper = ", ".join(f"{k}={v}" for k, v in t.params.items() if k != "method")
        lines.append(f"| {t.number} | {method_of(t)} | {100 * accuracy_of(t):.1f} | "
                     f"{total_flops_per_trial(t):.3g} | {hyper} |")
    return lines


def _plot_rungs(ax, trials, colors):
    """Each trial a line of its rung accuracies, placed at the FLOPs the search had spent."""
    offset = 0.0
    for t in sorted(trials, key=lambda t: t.number):
        values = _rung_values(t)
        steps = sorted(values)
        if not steps:
            continue
        flops = t.user_attrs.get("train_flops", 0.0)
        xs = [offset + flops * s / steps[-1] for s in steps]
        ax.plot(xs, [100 * values[s] for s in steps], "-o", ms=3,
                color=colors[method_of(t)], alpha=0.8)
        offset += flops
    ax.set_xlabel("train FLOPs spent by the search (trials in order)")
    ax.set_ylabel("validation accuracy % at each rung")
    ax.set_title(f"{len(trials)} trials; each line a trial, stopped where it fell behind")


def _plot_front(ax, study, total_flops_per_trial, colors):
    """--objective=pareto: each finished trial at its own full-length train FLOPs, the front
    joined as a staircase (what each budget buys at best)."""
    def cost(t):  # (a log axis: a free trial at 1 FLOP)
        return max(total_flops_per_trial(t), 1.0)

    done, front = _finished_and_front(study, total_flops_per_trial)
    for t in done:
        ax.plot(cost(t), 100 * accuracy_of(t), "o", ms=5, color=colors[method_of(t)], alpha=0.8)
    if front:
        ax.step([cost(t) for t in front], [100 * accuracy_of(t) for t in front], where="post",
                color="black", lw=1, alpha=0.6, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("train FLOPs of the trial at full length (log)")
    ax.set_ylabel("validation accuracy % at total_steps")
    ax.set_title(f"{len(done)} finished trials, each trained to the end (--objective=pareto)")


def write(study, workdir, total_flops_per_trial):
    """search.md (trials, what they spent, the best per method) and search.png (validation
    accuracy against FLOPs spent)."""
    plt = tables.pyplot()

    trials = study.get_trials(deepcopy=False)
    lines = ["| trial | method | hyper-parameters | state | last rung | validation % | "
             "FLOPs |", "|---:|---|---|---|---:|---:|---:|"]
    for t in trials:
        values = _rung_values(t)
        last = max(values) if values else None
        hyper = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in t.params.items() if k != "method")
        lines.append(f"| {t.number} | {method_of(t) or ''} | {hyper} | {t.state.name} | "
                     f"{last if last is not None else ''} | "
                     f"{'' if last is None else f'{100 * values[last]:.1f}'} | "
                     f"{t.user_attrs.get('flops', 0):.3g} |")
    full_cost = sum(total_flops_per_trial(t) for t in trials)
    used, training = spent(study), spent(study, "train_flops")
    lines += ["", f"{len(trials)} trials spent {used:.3g} FLOPs ({spent(study, 'eval_flops'):.3g} "
              f"of them evaluating), "
              f"{spent(study, 'train_steps'):.0f} train steps and "
              f"{spent(study, 'wall_time_s'):.0f} s; training every one of "
              f"them to total_steps would have cost {full_cost:.3g} train FLOPs (they trained "
              f"{training / full_cost:.0%} of it)." if full_cost else ""]
    best = best_per_method(study)
    lines += ["", "| method | best trial | validation % | hyper-parameters |", "|---|---:|---:|---|"]
    for method, t in sorted(best.items(), key=lambda kv: -accuracy_of(kv[1])):
        hyper = ", ".join(f"{k}={v}" for k, v in t.params.items() if k != "method")
        lines.append(f"| {method} | {t.number} | {100 * accuracy_of(t):.1f} | {hyper} |")
    lines += _pareto_lines(study, total_flops_per_trial) + _backbone_lines(study)
    text = "\n".join(lines) + "\n"
    paths.write_text_atomic(epath.Path(workdir) / "search.md", text)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(sorted({method_of(t) for t in trials}))}
    if is_pareto(study):
        _plot_front(ax, study, total_flops_per_trial, colors)
    else:
        _plot_rungs(ax, trials, colors)
    for method, color in colors.items():
        ax.plot([], [], "-o", color=color, label=method)
    ax.grid(alpha=0.3)
    tables.percent_axis(ax)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.tight_layout()
    tables.save_figure(fig, epath.Path(workdir) / "search.png")
    return text
