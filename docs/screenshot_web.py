"""Regenerate docs/images/web_page.png: the page serving a model, after uploading demo test images.

    python docs/screenshot_web.py --model-path runs/defax_nano-.../model.keras

Needs Debian's chromium and chromium-driver (as the browser test does).
"""

import argparse
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--output", default=str(ROOT / "docs" / "images" / "web_page.png"))
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from waitress import create_server

    from defax_keras.data.demo import demo_dataset
    from defax_keras.web.app import create_app
    from defax_keras.web.server import build_service

    test = Path(demo_dataset()) / "real_vs_fake" / "real-vs-fake" / "test"
    images = [p for cls in ("real", "fake") for p in sorted((test / cls).iterdir())[: args.per_class]]
    service = build_service(args.model_path)
    server = create_server(create_app(service), host="127.0.0.1", port=0, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1100,1000", "--hide-scrollbars"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"http://127.0.0.1:{server.effective_port}/")
        time.sleep(1)
        driver.find_element(By.ID, "explain-toggle").click()
        driver.find_element(By.ID, "file-input").send_keys("\n".join(str(p) for p in images))
        deadline = time.time() + 120
        while len(driver.find_elements(By.CSS_SELECTOR, ".card")) < len(images) and time.time() < deadline:
            time.sleep(0.3)
        cards = driver.find_elements(By.CSS_SELECTOR, ".card")
        cards[-1].find_element(By.CSS_SELECTOR, ".gradcam-toggle").click()
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(args.output)
    finally:
        driver.quit()
        server.close()
        service.close()
    print(f"Written {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
