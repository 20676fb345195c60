"""``statelite export-c``: a converted model as C++ source for TensorFlow Lite for Microcontrollers."""

from __future__ import annotations

import click


@click.command("export-c")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Folder to write NAME_model.h, NAME_model.cc and NAME_statelite.h into.")
@click.option("--name", metavar="NAME", help="C name of the model (default: the file's stem, made an identifier).")
@click.option("--arena-bytes", type=int, metavar="N",
              help="Tensor arena size to declare (default: measured with tflite-micro, times 1.25).")
@click.option("--key", metavar="KEY", help="A panel model's series whose scaler the header gets (default: the global one).")
def export_c(model, out_dir, name, arena_bytes, key):
    """Write MODEL as a C array and a header of what a TFLite Micro step loop needs.

    The header gives the input, output and state tensor indices as TFLM numbers them (paired with the state names),
    their quantization, the scaler, horizon and differencing, and the tensor arena size. Convert with --target tflm
    first.
    """
    from ..export_c import export_c as write

    result = write(model, out_dir, name=name, arena_bytes=arena_bytes, key=key)
    measured = f" (measured {result.measured_arena_bytes})" if result.measured_arena_bytes else ""
    click.echo(f"wrote {result.header}, {result.source} ({result.model_bytes:,} model bytes) and {result.info} "
               f"(arena {result.arena_bytes:,} bytes{measured})")


COMMANDS = [export_c]
