"""tljax: transfer learning of pretrained vision backbones with freezing schedules."""
