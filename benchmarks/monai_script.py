"""What a lab writes instead of tpem-seg (issue 18's reference): MONAI UNETR with the package's weights,
sliding_window_inference (fp32 eager, the package's tile, overlap 0.25, Gaussian, sw_batch_size 4),
the package's percentile normalisation, labels to a TIFF. Usage: python monai_script.py PACKAGE IN.tif OUT.tif"""
import json
import sys

import numpy as np
import tifffile
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNETR

package, src, dst = sys.argv[1:4]
manifest = json.load(open(f"{package}/manifest.json"))
c, tile = manifest["config"], tuple(manifest["config"]["tile"])
net = UNETR(c["in_channels"], c["out_channels"], tile, feature_size=c["feature_size"], hidden_size=c["hidden_size"],
            mlp_dim=c["mlp_dim"], num_heads=c["num_heads"], proj_type=c["proj_type"], norm_name=c["norm_name"],
            conv_block=c["conv_block"], res_block=c["res_block"], qkv_bias=c["qkv_bias"])
net.load_state_dict(torch.load(f"{package}/model.pt", map_location="cpu", weights_only=True))
net.eval()
x = tifffile.imread(src).astype(np.float32)  # (Z, Y, X), one channel
lo, hi = np.percentile(x, manifest["input"]["normalization"]["percentiles"])
x = np.clip((x - lo) / (hi - lo), 0, 1).astype(np.float32)
with torch.inference_mode():
    logits = sliding_window_inference(torch.from_numpy(x)[None, None], tile, 4, net, overlap=0.25, mode="gaussian")
tifffile.imwrite(dst, logits[0].argmax(0).numpy().astype(np.uint8))
