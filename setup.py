from setuptools import find_packages, setup

setup(
    name='mmpose_dp',
    version='0.1.0',
    description='Differentially private training for MMPose top-down models',
    packages=find_packages(include=['mmpose_dp', 'mmpose_dp.*']),
    python_requires='>=3.9',
    install_requires=[],  # installed by scripts/setup_env.sh, see requirements.txt
)
